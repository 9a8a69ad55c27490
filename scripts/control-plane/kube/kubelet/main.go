// kubelet built from the pinned k8s.io/kubernetes module, for the node that
// `scripts/control-plane.sh up DIR --node` runs beside the control plane.
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
