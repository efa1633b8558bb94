// etcd, built from the same module graph as the API server that uses it
// (test tooling only, never shipped).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
