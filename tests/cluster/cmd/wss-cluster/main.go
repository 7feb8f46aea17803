// Command wss-cluster runs the one-node test cluster and is, by the name it is called with,
// also the real kubectl and the real helm.
//
//	wss-cluster run --dir DIR [--repo R] [--volume-refresh-period 60s] [--endpoint-removal-lag 0s]
//	wss-cluster cleanup --dir DIR
//	wss-cluster health --dir DIR
//	wss-cluster container-init ...   (hidden: what the kubelet execs inside a container)
//	kubectl ... / helm ...           (argv[0] is a symlink named kubectl or helm)
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	helmcmd "helm.sh/helm/v4/pkg/cmd"
	"helm.sh/helm/v4/pkg/kube"
	"k8s.io/component-base/cli"
	"k8s.io/component-base/logs"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	kubectlutil "k8s.io/kubectl/pkg/cmd/util"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/runtime"
)

// exitUsage is the exit code for a bad command line (sysexits EX_USAGE).
const exitUsage = 64

const usage = `usage:
  wss-cluster run --dir DIR [--repo DIR] [--volume-refresh-period 60s] [--endpoint-removal-lag 0s]
  wss-cluster cleanup --dir DIR
  wss-cluster health --dir DIR
  kubectl ... | helm ...   (through symlinks named kubectl and helm)
`

func main() {
	switch filepath.Base(os.Args[0]) {
	case "kubectl":
		kubectlMain()
		return
	case "helm":
		helmMain()
		return
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(exitUsage)
	}
	args := os.Args[2:]
	var err error
	switch os.Args[1] {
	case "run":
		err = runMain(args)
	case "cleanup":
		err = cleanupMain(args)
	case "health":
		err = healthMain(args)
	case "container-init":
		runtime.ContainerInitMain()
		return
	case "kubectl":
		os.Args = os.Args[1:]
		kubectlMain()
		return
	case "helm":
		os.Args = os.Args[1:]
		helmMain()
		return
	default:
		fmt.Fprintf(os.Stderr, "wss-cluster: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(exitUsage)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "wss-cluster %s: %v\n", os.Args[1], err)
		if errors.Is(err, errUsage) {
			os.Exit(exitUsage)
		}
		os.Exit(1)
	}
}

var errUsage = errors.New("bad command line")

// kubectlMain is cmd/kubectl/kubectl.go of k8s.io/kubernetes.
func kubectlMain() {
	logs.GlogSetter(kubectlcmd.GetLogVerbosity(os.Args)) // nolint:errcheck
	command := kubectlcmd.NewDefaultKubectlCommand()
	if err := cli.RunNoErrOutput(command); err != nil {
		kubectlutil.CheckErr(err)
	}
}

// helmMain is cmd/helm/helm.go of helm.sh/helm/v4.
func helmMain() {
	kube.ManagedFieldsManager = "helm"
	cmd, err := helmcmd.NewRootCmd(os.Stdout, os.Args[1:], helmcmd.SetupLogging)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helm: %v\n", err)
		os.Exit(1)
	}
	if err := cmd.Execute(); err != nil {
		if cerr, ok := errors.AsType[helmcmd.CommandError](err); ok {
			os.Exit(cerr.ExitCode)
		}
		os.Exit(1)
	}
}
