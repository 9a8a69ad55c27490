// etcd server built from the pinned go.etcd.io/etcd/server/v3 module. It is a
// module of its own because etcd's server dependencies (grpc, otel, ...) are
// pinned differently from what k8s.io/kubernetes resolves to.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
