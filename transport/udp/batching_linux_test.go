package udp_test

// batching is whether ReadBatch moves several datagrams per system call.
const batching = true
