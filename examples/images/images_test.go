// Package images_test builds the relay, agent and proxy images with
// hack/images.sh and checks what is in them. Containers cannot run on the
// machines the tests run on, so each image is exported as an OCI archive
// and its binary extracted and run with -h.
package images_test

import (
	"archive/tar"
	"compress/gzip"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/clusterconnect/clusterconnect/internal/testenv/kubetest"
)

// builder is buildah or podman, whichever is installed.
func builder(t *testing.T) string {
	for _, b := range []string{"buildah", "podman"} {
		if p, err := exec.LookPath(b); err == nil {
			return p
		}
	}
	msg := "building images needs buildah or podman (Debian: apt-get install buildah; ./hack/test.sh installs it)"
	if kubetest.InCI() {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func TestImagesHoldOneStaticBinaryRunAsNonRoot(t *testing.T) {
	bin := builder(t)
	tag := fmt.Sprintf("test-%d", os.Getpid())
	cmd := exec.Command("../../hack/images.sh")
	cmd.Env = append(os.Environ(), "TAG="+tag)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)

	for _, name := range []string{"relay", "agent", "proxy"} {
		t.Run(name, func(t *testing.T) {
			ref := "clusterconnect/" + name + ":" + tag
			t.Cleanup(func() { exec.Command(bin, "rmi", ref).Run() })
			img := exportImage(t, bin, ref)

			assert.Equal(t, "65532:65532", img.config.Config.User, "a numeric non-root user")
			entry := "/usr/local/bin/clusterconnect-" + name
			assert.Equal(t, []string{entry}, img.config.Config.Entrypoint)
			for f := range img.files {
				assert.Contains(t, []string{entry, "/etc/ssl/certs/ca-certificates.crt"}, f, "nothing but the binary and the CA roots")
			}

			exe := filepath.Join(t.TempDir(), name)
			require.NoError(t, os.WriteFile(exe, img.files[entry], 0o755))
			f, err := elf.Open(exe)
			require.NoError(t, err)
			for _, p := range f.Progs {
				assert.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary: the empty base has no dynamic loader")
			}
			f.Close()
			help, err := exec.Command(exe, "-h").CombinedOutput()
			require.NoError(t, err, "%s", help)
			assert.Contains(t, string(help), "Every flag can also be set by its environment variable")

			// The tag is the version: the binary says it, and so does the
			// image.
			v, err := exec.Command(exe, "-version").CombinedOutput()
			require.NoError(t, err, "%s", v)
			assert.Contains(t, string(v), "clusterconnect "+name+" "+tag+" (")
			assert.Equal(t, tag, img.config.Config.Labels["org.opencontainers.image.version"])
			assert.Equal(t, "clusterconnect-"+name, img.config.Config.Labels["org.opencontainers.image.title"])
			assert.NotEmpty(t, img.config.Config.Labels["org.opencontainers.image.revision"])
		})
	}
}

type image struct {
	config struct {
		Config struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
	}
	files map[string][]byte // regular files, by absolute path
}

// exportImage writes ref as an OCI archive and reads its config and the
// files of its layers.
func exportImage(t *testing.T, bin, ref string) *image {
	archive := filepath.Join(t.TempDir(), "image.tar")
	push := []string{"push", ref, "oci-archive:" + archive}
	if filepath.Base(bin) == "podman" {
		push = []string{"save", "--format", "oci-archive", "-o", archive, ref}
	}
	out, err := exec.Command(bin, push...).CombinedOutput()
	require.NoError(t, err, "%s", out)
	blobs := readTar(t, mustOpen(t, archive))

	var index struct {
		Manifests []struct{ Digest string } `json:"manifests"`
	}
	require.NoError(t, json.Unmarshal(blobs["index.json"], &index))
	require.Len(t, index.Manifests, 1)
	var manifest struct {
		Config struct{ Digest string } `json:"config"`
		Layers []struct {
			MediaType string `json:"mediaType"`
			Digest    string `json:"digest"`
		} `json:"layers"`
	}
	require.NoError(t, json.Unmarshal(blob(t, blobs, index.Manifests[0].Digest), &manifest))
	img := &image{files: map[string][]byte{}}
	require.NoError(t, json.Unmarshal(blob(t, blobs, manifest.Config.Digest), &img.config))
	for _, l := range manifest.Layers {
		var r io.Reader = strings.NewReader(string(blob(t, blobs, l.Digest)))
		if strings.HasSuffix(l.MediaType, "gzip") {
			zr, err := gzip.NewReader(r)
			require.NoError(t, err)
			r = zr
		}
		for name, data := range readTar(t, r) {
			img.files[path.Clean("/"+name)] = data
		}
	}
	return img
}

func mustOpen(t *testing.T, p string) io.Reader {
	f, err := os.Open(p)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f
}

func blob(t *testing.T, blobs map[string][]byte, digest string) []byte {
	algo, hex, _ := strings.Cut(digest, ":")
	b, ok := blobs["blobs/"+algo+"/"+hex]
	require.True(t, ok, "blob %s missing from the archive", digest)
	return b
}

// readTar returns the regular files of a tar stream by name.
func readTar(t *testing.T, r io.Reader) map[string][]byte {
	files := map[string][]byte{}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		require.NoError(t, err)
		if h.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		require.NoError(t, err)
		files[strings.TrimPrefix(h.Name, "./")] = data
	}
}
