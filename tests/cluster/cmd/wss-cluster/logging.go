package main

import (
	"flag"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

// setupLogging sends the components' klog output to DIR/components.log, so that stdout (and
// DIR/cluster.log) keeps run's own lines; errors still reach stderr too (klog's
// stderrthreshold).
func setupLogging(dir string) error {
	fs := flag.NewFlagSet("klog", flag.ContinueOnError)
	klog.InitFlags(fs)
	for k, v := range map[string]string{
		"logtostderr":     "false",
		"alsologtostderr": "false",
		"one_output":      "true",
		"log_file":        filepath.Join(dir, "components.log"),
		"v":               "0",
	} {
		if err := fs.Set(k, v); err != nil {
			return err
		}
	}
	// The apiserver's own loopback clients would otherwise log their deprecation warnings.
	rest.SetDefaultWarningHandler(rest.NoWarnings{})
	return nil
}

func flushLogging() { klog.Flush() }
