package tunnel_test

import (
	"bufio"
	"io"
	"testing"

	"github.com/stretchr/testify/require"
)

type lineReader struct{ s *bufio.Scanner }

func newLineReader(r io.Reader) *lineReader { return &lineReader{bufio.NewScanner(r)} }

func (l *lineReader) next(t *testing.T) string {
	t.Helper()
	require.True(t, l.s.Scan(), "stream ended: %v", l.s.Err())
	return l.s.Text()
}
