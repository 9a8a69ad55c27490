// kube-proxy built from the pinned k8s.io/kubernetes module (iptables mode on the
// node of `scripts/control-plane.sh up DIR --node`): pods reach the API server's
// ClusterIP through it.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	os.Exit(cli.Run(app.NewProxyCommand()))
}
