package security

import (
	"fmt"

	"github.com/pion/logging"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// pionLogs sends pion's logs to zap. pion's Info is chatty about every
// flight, so everything below Warn becomes Debug.
type pionLogs struct{ log *zap.Logger }

func (f pionLogs) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{f.log.With(zap.String("scope", scope)).WithOptions(zap.AddCallerSkip(1))}
}

type pionLogger struct{ log *zap.Logger }

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(format string, args ...any) {}
func (l pionLogger) Debug(msg string)                  { l.log.Debug(msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.logf(zap.DebugLevel, format, args) }
func (l pionLogger) Info(msg string)                   { l.log.Debug(msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.logf(zap.DebugLevel, format, args) }
func (l pionLogger) Warn(msg string)                   { l.log.Warn(msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.logf(zap.WarnLevel, format, args) }
func (l pionLogger) Error(msg string)                  { l.log.Error(msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.logf(zap.ErrorLevel, format, args) }

func (l pionLogger) logf(level zapcore.Level, format string, args []any) {
	if l.log.Core().Enabled(level) {
		l.log.Log(level, fmt.Sprintf(format, args...))
	}
}
