// kube-controller-manager built from the pinned k8s.io/kubernetes module; see
// scripts/control-plane.sh for why we build it rather than download it.
package main

import (
	"os"
	_ "time/tzdata" // the cronjob controller resolves .spec.timeZone

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
