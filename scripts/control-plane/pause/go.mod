// The pod sandbox ("pause") image of the node that `scripts/control-plane.sh up DIR
// --node` runs: no registry is reachable here, so it is built locally, from the
// standard library alone.
module blastguard.local/control-plane/pause

go 1.25.0
