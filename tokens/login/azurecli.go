package login

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"

	"github.com/clusterconnect/clusterconnect/tokens/source"
)

// azureCLI is -login azurecli's source: az keeps its own tokens and
// decides whose they are (az login, az account set, az logout), so ours
// are kept only under az's active account — the default subscription's
// user and tenant in its azureProfile.json — and a token fetched for one
// account is never handed out for another. The profile is looked at on
// every Token call, read again when it changed: az account set to
// another tenant takes effect on the next request, in a running client
// proxy too, and after az logout az itself is asked, and says to log in.
type azureCLI struct {
	cmd     []string
	profile string // az's azureProfile.json
	cache   func(key string) (oauth2.TokenSource, error)

	mu      sync.Mutex
	stamp   profileStamp
	read    time.Time // when the profile was last read
	account string
	key     string
	src     oauth2.TokenSource
}

type profileStamp struct {
	mod  time.Time
	size int64
	ok   bool
}

// azureConfigDir is where az keeps its configuration: $AZURE_CONFIG_DIR,
// else ~/.azure.
func azureConfigDir() string {
	if d := os.Getenv("AZURE_CONFIG_DIR"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return ".azure"
	}
	return filepath.Join(home, ".azure")
}

func (a *azureCLI) Token() (*oauth2.Token, error) {
	src, err := a.source()
	if err != nil {
		return nil, err
	}
	return src.Token()
}

// source is the cached source for az's active account now.
func (a *azureCLI) source() (oauth2.TokenSource, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var stamp profileStamp
	if fi, err := os.Stat(a.profile); err == nil {
		stamp = profileStamp{mod: fi.ModTime(), size: fi.Size(), ok: true}
	}
	// Read again when it changed, and at least once a second: a file
	// system with coarse times could show a change of the same size as
	// none.
	if now := time.Now(); a.src == nil || stamp != a.stamp || now.Sub(a.read) >= time.Second {
		a.stamp, a.read, a.account = stamp, now, activeAccount(a.profile)
	}
	key := "azurecli|" + strings.Join(a.cmd, " ") + "|" + a.account
	if a.src == nil || key != a.key {
		src, err := a.cache(key)
		if err != nil {
			return nil, err
		}
		a.key, a.src = key, src
	}
	return a.src, nil
}

// activeAccount names az's active account from its profile: the default
// subscription's user, tenant and cloud; "" when az has none (never
// logged in, or logged out).
func activeAccount(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var profile struct {
		Subscriptions []struct {
			IsDefault       bool   `json:"isDefault"`
			TenantID        string `json:"tenantId"`
			EnvironmentName string `json:"environmentName"`
			User            struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"user"`
		} `json:"subscriptions"`
	}
	// az writes the file with a UTF-8 byte order mark.
	if json.Unmarshal(bytes.TrimPrefix(raw, []byte("\ufeff")), &profile) != nil {
		return ""
	}
	for _, s := range profile.Subscriptions {
		if s.IsDefault {
			return strings.Join([]string{s.User.Type, s.User.Name, s.TenantID, s.EnvironmentName}, "|")
		}
	}
	return ""
}

// azureCLISource is the source for -login azurecli running cmd.
func (o *Options) azureCLISource(cmd []string) oauth2.TokenSource {
	return &azureCLI{cmd: cmd, profile: filepath.Join(azureConfigDir(), "azureProfile.json"),
		cache: func(key string) (oauth2.TokenSource, error) {
			return o.cached(key, source.FromTokenSource(&source.Command{Command: cmd}))
		}}
}
