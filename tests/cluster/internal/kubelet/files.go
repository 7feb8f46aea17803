package kubelet

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/wss-sidecar/wss-sidecar/tests/cluster/internal/ranges"
)

// hostsFile renders /etc/hosts as pkg/kubelet/kubelet_pods.go managedHostsFileContent does.
func hostsFile(pod *v1.Pod, podIPs []string) []byte {
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file.\n")
	b.WriteString("127.0.0.1\tlocalhost\n")
	b.WriteString("::1\tlocalhost ip6-localhost ip6-loopback\n")
	b.WriteString("fe00::0\tip6-localnet\n")
	b.WriteString("fe00::0\tip6-mcastprefix\n")
	b.WriteString("fe00::1\tip6-allnodes\n")
	b.WriteString("fe00::2\tip6-allrouters\n")
	host, domain := podHostname(pod)
	for _, ip := range podIPs {
		if domain != "" {
			fmt.Fprintf(&b, "%s\t%s.%s\t%s\n", ip, host, domain, host)
		} else {
			fmt.Fprintf(&b, "%s\t%s\n", ip, host)
		}
	}
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes()
}

// hostNetworkHostsFile is /etc/hosts of a hostNetwork pod: the node's own, under the
// kubelet's header, then the pod's HostAliases (pkg/kubelet/kubelet_pods.go
// nodeHostsFileContent).
func hostNetworkHostsFile(pod *v1.Pod) ([]byte, error) {
	node, err := os.ReadFile(nodeHostsPath)
	if err != nil {
		return nil, fmt.Errorf("hostNetwork pod: the node's hosts file: %w", err)
	}
	var b bytes.Buffer
	b.WriteString("# Kubernetes-managed hosts file (host network).\n")
	b.Write(node)
	if len(pod.Spec.HostAliases) > 0 {
		b.WriteString("\n# Entries added by HostAliases.\n")
		for _, a := range pod.Spec.HostAliases {
			fmt.Fprintf(&b, "%s\t%s\n", a.IP, strings.Join(a.Hostnames, "\t"))
		}
	}
	return b.Bytes(), nil
}

// nodeHostsPath is the node's hosts file (a variable for tests).
var nodeHostsPath = "/etc/hosts"

// podHostname is the pod's hostname and domain (pkg/kubelet/kubelet_pods.go GeneratePodHostNameAndDomain).
func podHostname(pod *v1.Pod) (string, string) {
	host := pod.Name
	if pod.Spec.Hostname != "" {
		host = pod.Spec.Hostname
	}
	if len(host) > 63 {
		host = strings.TrimRight(host[:63], "-.")
	}
	domain := ""
	if pod.Spec.Subdomain != "" {
		domain = fmt.Sprintf("%s.%s.svc.%s", pod.Spec.Subdomain, pod.Namespace, ranges.ClusterDomain)
	}
	return host, domain
}

// resolvConf renders /etc/resolv.conf as pkg/kubelet/network/dns/dns.go GetPodDNS does for
// the ClusterFirst policy (the host's own search domains are not copied: nothing in a pod may
// resolve through the host), and for None with the pod's dnsConfig.
func resolvConf(pod *v1.Pod) ([]byte, error) {
	var servers, searches []string
	options := map[string]*string{}
	var order []string
	setOpt := func(name string, val *string) {
		if _, ok := options[name]; !ok {
			order = append(order, name)
		}
		options[name] = val
	}
	switch pod.Spec.DNSPolicy {
	case v1.DNSClusterFirst, v1.DNSClusterFirstWithHostNet, "":
		servers = []string{ranges.DNSServiceIP}
		searches = []string{
			pod.Namespace + ".svc." + ranges.ClusterDomain,
			"svc." + ranges.ClusterDomain,
			ranges.ClusterDomain,
		}
		five := "5"
		setOpt("ndots", &five)
	case v1.DNSNone:
	case v1.DNSDefault:
		return nil, fmt.Errorf("dnsPolicy Default (the host's resolver) is not supported by wss-cluster: pods must not resolve through the host")
	default:
		return nil, fmt.Errorf("unknown dnsPolicy %q", pod.Spec.DNSPolicy)
	}
	// dns.go appendDNSConfig: dnsConfig entries are merged after the policy's.
	if c := pod.Spec.DNSConfig; c != nil {
		servers = appendUnique(servers, c.Nameservers...)
		searches = appendUnique(searches, c.Searches...)
		for _, o := range c.Options {
			setOpt(o.Name, o.Value)
		}
	}
	var b bytes.Buffer
	if len(searches) > 0 {
		fmt.Fprintf(&b, "search %s\n", strings.Join(searches, " "))
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "nameserver %s\n", s)
	}
	if len(order) > 0 {
		var opts []string
		for _, n := range order {
			if v := options[n]; v != nil {
				opts = append(opts, n+":"+*v)
			} else {
				opts = append(opts, n)
			}
		}
		fmt.Fprintf(&b, "options %s\n", strings.Join(opts, " "))
	}
	return b.Bytes(), nil
}

func appendUnique(list []string, add ...string) []string {
	seen := map[string]bool{}
	for _, s := range list {
		seen[s] = true
	}
	for _, s := range add {
		if !seen[s] {
			list = append(list, s)
			seen[s] = true
		}
	}
	return list
}
