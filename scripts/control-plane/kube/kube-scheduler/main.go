// kube-scheduler built from the pinned k8s.io/kubernetes module: with a node,
// pods are bound to it instead of staying Pending.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	os.Exit(cli.Run(app.NewSchedulerCommand()))
}
