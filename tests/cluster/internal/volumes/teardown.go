package volumes

import (
	"fmt"
	"os"
)

// Teardown removes every volume of the pod (the pod directory is left to the caller).
func (p *Pod) Teardown() error {
	dir := PodDir(p.cfg.Dir, string(p.pod.UID)) + "/volumes"
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("volumes: remove %s: %w", dir, err)
	}
	return nil
}
