// kube-apiserver built from the pinned k8s.io/kubernetes module. The server
// itself lives in the upstream app package; this main only runs its command,
// so the binary behaves like the released one for the flags we pass.
package main

import (
	"os"
	_ "time/tzdata" // CronJob time zones validate without the host's zoneinfo

	"k8s.io/component-base/cli"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

func main() {
	os.Exit(cli.Run(app.NewAPIServerCommand()))
}
