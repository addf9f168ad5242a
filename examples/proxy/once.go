package main

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// errSaid is an error already shown: main exits 1 without a word.
var errSaid = errors.New("already said")

// sayOnce shows a failure of the exec credential plugin once per kubectl
// command. kubectl runs the plugin again for each request of a command,
// and when it fails, for each try at discovery: six runs, each one's
// stderr on the user's terminal. Run by kubectl (KUBERNETES_EXEC_INFO is
// set), the plugin remembers for a few seconds, under dir, which words it
// said to which parent process, and stays quiet the next times.
func sayOnce(err error, dir string) error {
	if os.Getenv("KUBERNETES_EXEC_INFO") == "" || dir == "" {
		return err
	}
	dir = filepath.Join(dir, "said")
	sum := sha256.Sum256([]byte(parentID() + "\n" + err.Error()))
	mark := filepath.Join(dir, hex.EncodeToString(sum[:12]))
	now := time.Now()
	if fi, statErr := os.Stat(mark); statErr == nil && now.Sub(fi.ModTime()) < saidFor {
		return errSaid
	}
	if os.MkdirAll(dir, 0o700) == nil {
		forget(dir, saidFor)
		os.WriteFile(mark, nil, 0o600)
		os.Chtimes(mark, now, now)
	}
	return err
}

// saidFor is how long a plugin's words are not repeated to the same
// process: longer than a kubectl command's runs of the plugin take, short
// enough that a person running the plugin again by hand sees them again.
const saidFor = 10 * time.Second

// forget removes the notes in dir older than maxAge.
func forget(dir string, maxAge time.Duration) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) >= maxAge {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// parentID names the process that ran this one, with its start time where
// the system says it, so that a new process given the same ID is another.
func parentID() string {
	ppid := os.Getppid()
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(ppid) + "/stat")
	if err != nil {
		return strconv.Itoa(ppid)
	}
	// Field 22 is the start time; the command name (field 2) is in
	// parentheses and may hold spaces.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	if f := strings.Fields(rest); len(f) > 19 {
		return fmt.Sprintf("%d@%s", ppid, f[19])
	}
	return strconv.Itoa(ppid)
}
