package main

import (
	_ "github.com/coredns/coredns/core/dnsserver"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "go.etcd.io/etcd/server/v3/embed"
	_ "helm.sh/helm/v4/pkg/cmd"
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/pkg/probe/http"
	_ "k8s.io/kubernetes/pkg/volume/util"
)

func main() {}
