// Command x509check loads the certificates and CSRs Sigil emits with Go's
// standard crypto/x509 (a second, independent parser) and reports, as JSON
// on stdout, whether each one parses, chains to its roots and carries the
// expected URI SAN. Standard library only; Go 1.19 compatible.
//
// Input (file named by the only argument): a JSON array of
//
//	{"label": "...", "kind": "leaf"|"ca"|"csr",
//	 "chain": [DER base64, leaf first], "roots": [DER base64],
//	 "spiffe_id": "spiffe://..."}
//
// A leaf must verify against the roots (the rest of its chain as
// intermediates) for any extended key usage and have exactly one URI SAN,
// equal to spiffe_id; a CA the same with the trust domain ID; a CSR must
// parse and carry a valid self-signature. Exit status 1 if any item fails.
package main

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strings"
)

type item struct {
	Label    string   `json:"label"`
	Kind     string   `json:"kind"`
	Chain    [][]byte `json:"chain"`
	Roots    [][]byte `json:"roots"`
	SpiffeID string   `json:"spiffe_id"`
}

type result struct {
	Label      string   `json:"label"`
	OK         bool     `json:"ok"`
	Parsed     bool     `json:"parsed"`
	Verified   bool     `json:"verified"`
	URISANs    []string `json:"uri_sans"`
	ChainLen   int      `json:"verified_chain_len"`
	Error      string   `json:"error,omitempty"`
	GoVersion  string   `json:"go_version"`
	Extensions int      `json:"extensions"`
}

func check(it item) result {
	r := result{Label: it.Label, GoVersion: runtime.Version(), URISANs: []string{}}
	if len(it.Chain) == 0 {
		r.Error = "no certificate given"
		return r
	}
	if it.Kind == "csr" {
		csr, err := x509.ParseCertificateRequest(it.Chain[0])
		if err != nil {
			r.Error = "parse CSR: " + err.Error()
			return r
		}
		r.Parsed = true
		r.Extensions = len(csr.Extensions)
		if err := csr.CheckSignature(); err != nil {
			r.Error = "CSR signature: " + err.Error()
			return r
		}
		for _, u := range csr.URIs {
			r.URISANs = append(r.URISANs, u.String())
		}
		r.Verified = true
		r.OK = true
		return r
	}
	var certs []*x509.Certificate
	for i, der := range it.Chain {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			r.Error = fmt.Sprintf("parse certificate %d: %v", i, err)
			return r
		}
		certs = append(certs, c)
	}
	r.Parsed = true
	leaf := certs[0]
	r.Extensions = len(leaf.Extensions)
	for _, u := range leaf.URIs {
		r.URISANs = append(r.URISANs, u.String())
	}
	roots := x509.NewCertPool()
	for i, der := range it.Roots {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			r.Error = fmt.Sprintf("parse root %d: %v", i, err)
			return r
		}
		roots.AddCert(c)
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		r.Error = "verify: " + err.Error()
		return r
	}
	r.Verified = true
	r.ChainLen = len(chains[0])
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != it.SpiffeID {
		r.Error = fmt.Sprintf("want exactly one URI SAN %q, got %q", it.SpiffeID, strings.Join(r.URISANs, ","))
		return r
	}
	switch it.Kind {
	case "leaf":
		if leaf.IsCA || !leaf.BasicConstraintsValid {
			r.Error = "leaf: basicConstraints missing or cA true"
			return r
		}
		if leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 ||
			leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
			r.Error = "leaf: keyUsage must have digitalSignature and no keyCertSign/cRLSign"
			return r
		}
	case "ca":
		if !leaf.IsCA || leaf.KeyUsage&x509.KeyUsageCertSign == 0 {
			r.Error = "CA: cA false or no keyCertSign"
			return r
		}
	default:
		r.Error = "unknown kind " + it.Kind
		return r
	}
	r.OK = true
	return r
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: x509check INPUT.json")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	var items []item
	if err := json.Unmarshal(data, &items); err != nil {
		fmt.Fprintln(os.Stderr, "bad input:", err)
		os.Exit(2)
	}
	var out []result
	failed := false
	for _, it := range items {
		r := check(it)
		failed = failed || !r.OK
		out = append(out, r)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
