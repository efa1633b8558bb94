// kubelet, built from the k8s.io/kubernetes module for flush-conntrack's
// real-node tests (test tooling only, never shipped).
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	os.Exit(cli.Run(app.NewKubeletCommand(context.Background())))
}
