// Command printversion prints what package version says of its build, for
// the package's test.
package main

import (
	"fmt"

	"github.com/clusterconnect/clusterconnect/internal/version"
)

func main() { fmt.Print(version.String(), " ", version.UserAgent("agent")) }
