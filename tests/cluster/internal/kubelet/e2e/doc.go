// Package e2e checks the process kubelet against the running cluster
// (`scripts/cluster up`, then `go test -tags e2e ./internal/kubelet/e2e/`).
package e2e
