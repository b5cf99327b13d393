package main

import (
	"net"
	"net/url"
	"strings"
	"testing"
)

func TestParseSubject(t *testing.T) {
	for _, tc := range []struct {
		in      string
		cn      string
		org     []string
		wantErr string
	}{
		{in: "CN=www.example.com", cn: "www.example.com"},
		{in: "cn = a , O=Example\\, Inc., O=Second", cn: "a", org: []string{"Example, Inc.", "Second"}},
		{in: "", wantErr: "empty subject"},
		{in: "CN=a,CN=b", wantErr: "CN given twice"},
		{in: "CN", wantErr: "KEY=VALUE"},
		{in: "CN=", wantErr: "KEY=VALUE"},
		{in: "XX=y", wantErr: "attribute"},
	} {
		n, err := parseSubject(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: %v, want an error with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || n.CommonName != tc.cn || strings.Join(n.Organization, "|") != strings.Join(tc.org, "|") {
			t.Errorf("%q: %+v %v", tc.in, n, err)
		}
	}
}

func TestParseSANs(t *testing.T) {
	var (
		dns, emails []string
		ips         []net.IP
		uris        []*url.URL
	)
	if err := parseSANs("DNS:a.example, ip:127.0.0.1,IP:::1,EMAIL:x@y,URI:spiffe://t/w", &dns, &ips, &emails, &uris); err != nil {
		t.Fatal(err)
	}
	if len(dns) != 1 || len(ips) != 2 || len(emails) != 1 || len(uris) != 1 {
		t.Fatalf("%v %v %v %v", dns, ips, emails, uris)
	}
	for _, bad := range []string{"a.example", "IP:999.1.1.1", "URI:relative", "FOO:bar", "DNS:"} {
		if err := parseSANs(bad, &dns, &ips, &emails, &uris); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func FuzzParseSubject(f *testing.F) {
	for _, s := range []string{"CN=a,O=b", "CN=a\\,b", "\\", "=,=", "C=DE,ST=Berlin,L=B,OU=x,SERIALNUMBER=1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSubject(s)
		if err == nil && n.CommonName == "" && len(n.Organization)+len(n.OrganizationalUnit)+len(n.Country)+
			len(n.Locality)+len(n.Province) == 0 && n.SerialNumber == "" {
			t.Fatalf("%q accepted as an empty name", s)
		}
	})
}

func FuzzParseSANs(f *testing.F) {
	for _, s := range []string{"DNS:a,IP:1.2.3.4", "URI:https://x/y", "EMAIL:a@b", ":", ",,"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var (
			dns, emails []string
			ips         []net.IP
			uris        []*url.URL
		)
		_ = parseSANs(s, &dns, &ips, &emails, &uris)
	})
}

func FuzzPKCS8FromPEM(f *testing.F) {
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nMA==\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = pkcs8FromPEM(b) })
}
