package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"go.uber.org/zap"
)

func TestNew_JSON(t *testing.T) {
	var buf bytes.Buffer
	log, err := New("info", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	log.Named("transport").Info("link established", zap.String("peer", "alice"))
	log.Debug("dropped below the level")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("got %d lines, want 1:\n%s", len(lines), buf.String())
	}
	var entry map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &entry); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"level": "info", "logger": "transport", "msg": "link established", "peer": "alice"} {
		if entry[k] != want {
			t.Errorf("%s = %v, want %q", k, entry[k], want)
		}
	}
	if _, ok := entry["time"]; !ok {
		t.Error("no time field")
	}
}

func TestNew_ConsoleLevels(t *testing.T) {
	for _, tt := range []struct {
		level string
		want  []string // messages that appear
	}{
		{"debug", []string{"d", "i", "w", "e"}},
		{"info", []string{"i", "w", "e"}},
		{"", []string{"i", "w", "e"}},
		{"warn", []string{"w", "e"}},
		{"error", []string{"e"}},
	} {
		var buf bytes.Buffer
		log, err := New(tt.level, "console", &buf)
		if err != nil {
			t.Fatal(err)
		}
		log.Debug("d")
		log.Info("i")
		log.Warn("w")
		log.Error("e")
		if got := strings.Count(buf.String(), "\n"); got != len(tt.want) {
			t.Errorf("level %q: %d lines, want %d:\n%s", tt.level, got, len(tt.want), buf.String())
		}
		if len(tt.want) == 4 && !strings.Contains(buf.String(), "\tdebug\t") {
			t.Errorf("console line lacks the level: %s", buf.String())
		}
	}
}

func TestNew_Errors(t *testing.T) {
	if _, err := New("verbose", "console", &bytes.Buffer{}); err == nil || err.Error() != `log level "verbose": use debug, info, warn or error` {
		t.Errorf("bad level: %v", err)
	}
	if _, err := New("info", "xml", &bytes.Buffer{}); err == nil || err.Error() != `log format "xml": use console or json` {
		t.Errorf("bad format: %v", err)
	}
}
