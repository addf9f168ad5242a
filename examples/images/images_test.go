// Package images_test builds the relay, agent and proxy images with
// hack/images.sh, for amd64 and arm64 under a manifest list, and checks
// what is in them. Containers cannot run on the machines the tests run
// on, so each list is exported as an OCI archive and each binary
// extracted: the one for this machine's architecture is run with -h.
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
	"runtime"
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

	machines := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64}
	for _, name := range []string{"relay", "agent", "proxy"} {
		t.Run(name, func(t *testing.T) {
			ref := "clusterconnect/" + name + ":" + tag
			t.Cleanup(func() {
				exec.Command(bin, "manifest", "rm", ref).Run()
				for arch := range machines {
					exec.Command(bin, "rmi", ref+"-"+arch).Run()
				}
			})
			// The tag is a manifest list of one image per architecture.
			images := exportList(t, bin, ref)
			require.Len(t, images, len(machines))
			for arch, img := range images {
				t.Run(arch, func(t *testing.T) {
					machine, ok := machines[arch]
					require.True(t, ok, "an image for %s", arch)
					assert.Equal(t, arch, img.config.Architecture)
					assert.Equal(t, "linux", img.config.OS)
					assert.Equal(t, "65532:65532", img.config.Config.User, "a numeric non-root user")
					entry := "/usr/local/bin/clusterconnect-" + name
					assert.Equal(t, []string{entry}, img.config.Config.Entrypoint)
					for f := range img.files {
						assert.Contains(t, []string{entry, "/etc/ssl/certs/ca-certificates.crt"}, f, "nothing but the binary and the CA roots")
					}
					assert.Equal(t, tag, img.config.Config.Labels["org.opencontainers.image.version"])
					assert.Equal(t, "clusterconnect-"+name, img.config.Config.Labels["org.opencontainers.image.title"])
					assert.NotEmpty(t, img.config.Config.Labels["org.opencontainers.image.revision"])
					t.Logf("%s/%s: %.1f MiB compressed, binary %.1f MiB", name, arch, float64(img.compressed)/(1<<20), float64(len(img.files[entry]))/(1<<20))

					exe := filepath.Join(t.TempDir(), name)
					require.NoError(t, os.WriteFile(exe, img.files[entry], 0o755))
					f, err := elf.Open(exe)
					require.NoError(t, err)
					assert.Equal(t, machine, f.Machine, "built for %s", arch)
					for _, p := range f.Progs {
						assert.NotEqual(t, elf.PT_INTERP, p.Type, "a static binary: the empty base has no dynamic loader")
					}
					f.Close()
					if arch != runtime.GOARCH {
						return // this machine cannot run it; its ELF header says what it is
					}
					help, err := exec.Command(exe, "-h").CombinedOutput()
					require.NoError(t, err, "%s", help)
					assert.Contains(t, string(help), "Every flag can also be set by its environment variable")

					// The tag is the version: the binary says it, and so
					// does the image.
					v, err := exec.Command(exe, "-version").CombinedOutput()
					require.NoError(t, err, "%s", v)
					assert.Contains(t, string(v), "clusterconnect "+name+" "+tag+" (")
				})
			}
		})
	}
}

type image struct {
	config struct {
		Architecture string `json:"architecture"`
		OS           string `json:"os"`
		Config       struct {
			User       string            `json:"User"`
			Entrypoint []string          `json:"Entrypoint"`
			Labels     map[string]string `json:"Labels"`
		} `json:"config"`
	}
	files      map[string][]byte // regular files, by absolute path
	compressed int64             // the layers' size, as pushed
}

// exportList writes the manifest list ref as an OCI archive and reads
// each image it lists, by architecture: its config and the files of its
// layers.
func exportList(t *testing.T, bin, ref string) map[string]*image {
	archive := filepath.Join(t.TempDir(), "list.tar")
	out, err := exec.Command(bin, "manifest", "push", "--all", "--format", "oci", ref, "oci-archive:"+archive).CombinedOutput()
	require.NoError(t, err, "%s", out)
	blobs := readTar(t, mustOpen(t, archive))

	type descriptor struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
		Platform  struct {
			Architecture string `json:"architecture"`
		} `json:"platform"`
	}
	var top, list struct {
		Manifests []descriptor `json:"manifests"`
	}
	require.NoError(t, json.Unmarshal(blobs["index.json"], &top))
	require.Len(t, top.Manifests, 1)
	require.Equal(t, "application/vnd.oci.image.index.v1+json", top.Manifests[0].MediaType, "a manifest list")
	require.NoError(t, json.Unmarshal(blob(t, blobs, top.Manifests[0].Digest), &list))
	images := map[string]*image{}
	for _, m := range list.Manifests {
		var manifest struct {
			Config struct{ Digest string } `json:"config"`
			Layers []descriptor            `json:"layers"`
		}
		require.NoError(t, json.Unmarshal(blob(t, blobs, m.Digest), &manifest))
		img := &image{files: map[string][]byte{}}
		require.NoError(t, json.Unmarshal(blob(t, blobs, manifest.Config.Digest), &img.config))
		for _, l := range manifest.Layers {
			img.compressed += l.Size
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
		images[m.Platform.Architecture] = img
	}
	return images
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
