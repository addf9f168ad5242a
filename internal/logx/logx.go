// Package logx holds the one logging default the packages share: a nil
// *slog.Logger in a Config means "log nothing", never the global logger.
package logx

import "log/slog"

// OrDiscard returns l, or a logger that discards everything when l is nil.
func OrDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
