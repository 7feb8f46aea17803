package main

// Modules the cluster's packages use once they are real (CoreDNS for dns, the kubelet's prober
// and atomic writer for kubelet/volumes). Imported here so that the binary links them now and
// the build cache stays warm; drop a line once a package imports it itself.
import (
	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "k8s.io/kubernetes/pkg/probe/http"
	_ "k8s.io/kubernetes/pkg/volume/util"
)
