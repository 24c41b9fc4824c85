// Package conformance runs the upstream Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance) against Blixt, an L4-only implementation, for the
// GATEWAY-TCP, GATEWAY-UDP and GATEWAY-TLS profiles. The runner itself is TestConformance in
// conformance_test.go; this file decides, before anything touches a cluster, which upstream
// tests run and which are skipped because they need HTTP or HTTPS listeners. See
// docs/conformance.md.
package conformance

import (
	"bufio"
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// SuiteVersion is the release of sigs.k8s.io/gateway-api/conformance in go.mod.
const SuiteVersion = "v1.7.0"

// BaseManifests is the suite's base manifest, replacing upstream's HTTP-based
// base/manifests.yaml. Looked up in Files first, then in the upstream manifests.
const BaseManifests = "base/l4-manifests.yaml"

// SkipListFile is the committed list of skipped tests and their reasons.
const SkipListFile = "skipped.txt"

// Files holds the base manifest and the skip list, compiled into the runner.
//
//go:embed base/l4-manifests.yaml skipped.txt
var Files embed.FS

// Profiles are the conformance profiles Blixt reports.
var Profiles = []suite.ConformanceProfileName{
	suite.GatewayTCPConformanceProfileName,
	suite.GatewayUDPConformanceProfileName,
	suite.GatewayTLSConformanceProfileName,
}

// SupportedFeatures is what Blixt claims: the core features of its three profiles, and the one
// extended feature it implements whose tests need no HTTP listener
// (GatewayRouteHostnameIntersectionPrecedence: TLSRoute precedence by the route's own
// hostname). The other extended features of these profiles either need HTTP listeners in their
// tests (GatewayStaticAddresses, GatewayAddressEmpty, GatewayInfrastructure, ListenerSet...)
// or are not implemented (TLSRouteModeTerminate, TLSRouteModeMixed, BackendTLSPolicy); see
// docs/conformance.md. Adding one here changes which tests run: TestSkipListMatchesSuite then
// tells which lines skipped.txt must gain or lose.
var SupportedFeatures = []features.FeatureName{
	features.SupportGateway,
	features.SupportReferenceGrant,
	features.SupportTCPRoute,
	features.SupportUDPRoute,
	features.SupportTLSRoute,
	features.SupportGatewayRouteHostnameIntersectionPrecedence,
}

// profileByName maps the profiles the suite exports to their names (the suite's own map is
// unexported).
var profileByName = map[suite.ConformanceProfileName]suite.ConformanceProfile{
	suite.GatewayHTTPConformanceProfileName: suite.GatewayHTTPConformanceProfile,
	suite.GatewayTLSConformanceProfileName:  suite.GatewayTLSConformanceProfile,
	suite.GatewayTCPConformanceProfileName:  suite.GatewayTCPConformanceProfile,
	suite.GatewayUDPConformanceProfileName:  suite.GatewayUDPConformanceProfile,
	suite.GatewayGRPCConformanceProfileName: suite.GatewayGRPCConformanceProfile,
	suite.MeshHTTPConformanceProfileName:    suite.MeshHTTPConformanceProfile,
	suite.MeshGRPCConformanceProfileName:    suite.MeshGRPCConformanceProfile,
}

// Profile returns the suite's definition of a profile.
func Profile(name suite.ConformanceProfileName) (suite.ConformanceProfile, error) {
	p, ok := profileByName[name]
	if !ok {
		return p, fmt.Errorf("unknown conformance profile %q", name)
	}
	return p, nil
}

// Disposition is what the runner does with one upstream test.
type Disposition string

const (
	// Run: every feature the test needs is supported and it needs no HTTP listener.
	Run Disposition = "run"
	// SkipHTTP: the features are supported but the test needs HTTP or HTTPS listeners.
	SkipHTTP Disposition = "skip (needs HTTP)"
	// NotSupported: the test needs a feature Blixt does not claim; the suite records it as
	// NOT_SUPPORTED and leaves it out of the report's counts.
	NotSupported Disposition = "not supported"
)

// PlannedTest is one upstream test and what happens to it.
type PlannedTest struct {
	Test suite.ConformanceTest
	// Profiles (among the selected ones) whose report the test counts in: every feature of the
	// test is a core or extended feature of the profile. Extended tells which part.
	Profiles []suite.ConformanceProfileName
	Extended map[suite.ConformanceProfileName]bool
	// Missing are the features the test needs that are not supported.
	Missing []features.FeatureName
	// HTTP says why the test needs HTTP (empty when it does not).
	HTTP        []string
	Disposition Disposition
}

// Plan classifies every test of a suite.
type Plan struct {
	Tests     []PlannedTest
	Profiles  []suite.ConformanceProfileName
	Supported sets.Set[features.FeatureName]
}

// EffectiveFeatures is what the suite will treat as supported: the declared features plus
// the core features of each selected profile (NewConformanceTestSuite adds those itself).
func EffectiveFeatures(declared []features.FeatureName, profiles []suite.ConformanceProfileName) (sets.Set[features.FeatureName], error) {
	out := sets.New(declared...)
	for _, name := range profiles {
		p, err := Profile(name)
		if err != nil {
			return nil, err
		}
		out = out.Union(p.CoreFeatures)
	}
	return out, nil
}

// NewPlan classifies tests for the given profiles and supported features. manifests is the
// upstream manifest filesystem (tests/*.yaml, base/manifests.yaml).
func NewPlan(tests []suite.ConformanceTest, manifests fs.FS, profiles []suite.ConformanceProfileName, supported sets.Set[features.FeatureName]) (*Plan, error) {
	upstreamBase, err := readObjects(manifests, "base/manifests.yaml")
	if err != nil {
		return nil, fmt.Errorf("reading upstream base manifests: %w", err)
	}
	httpBaseGateways := map[string]bool{}
	for _, o := range upstreamBase {
		if o.kind() == "Gateway" && len(o.httpListeners()) > 0 {
			httpBaseGateways[o.key()] = true
		}
	}

	plan := &Plan{Profiles: profiles, Supported: supported}
	for _, test := range tests {
		pt := PlannedTest{Test: test, Extended: map[suite.ConformanceProfileName]bool{}}
		for _, f := range test.Features {
			if !supported.Has(f) {
				pt.Missing = append(pt.Missing, f)
			}
		}
		for _, name := range profiles {
			p, err := Profile(name)
			if err != nil {
				return nil, err
			}
			in, extended := true, false
			for _, f := range test.Features {
				if !p.CoreFeatures.Has(f) && !p.ExtendedFeatures.Has(f) {
					in = false
					break
				}
				if !p.CoreFeatures.Has(f) {
					extended = true
				}
			}
			if in {
				pt.Profiles = append(pt.Profiles, name)
				pt.Extended[name] = extended
			}
		}
		pt.HTTP, err = httpNeeds(test, manifests, httpBaseGateways)
		if err != nil {
			return nil, fmt.Errorf("test %s: %w", test.ShortName, err)
		}
		switch {
		case len(pt.Missing) > 0:
			pt.Disposition = NotSupported
		case len(pt.HTTP) > 0:
			pt.Disposition = SkipHTTP
		default:
			pt.Disposition = Run
		}
		plan.Tests = append(plan.Tests, pt)
	}
	return plan, nil
}

// Names returns the names of the tests with disposition d, sorted.
func (p *Plan) Names(d Disposition) []string {
	var out []string
	for _, t := range p.Tests {
		if t.Disposition == d {
			out = append(out, t.Test.ShortName)
		}
	}
	sort.Strings(out)
	return out
}

// InProfile returns the tests that count in profile, with disposition d, sorted by name.
func (p *Plan) InProfile(profile suite.ConformanceProfileName, d Disposition) []PlannedTest {
	var out []PlannedTest
	for _, t := range p.Tests {
		if t.Disposition == d && slices.Contains(t.Profiles, profile) {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Test.ShortName < out[j].Test.ShortName })
	return out
}

// Lookup returns the planned test named name.
func (p *Plan) Lookup(name string) (PlannedTest, bool) {
	for _, t := range p.Tests {
		if t.Test.ShortName == name {
			return t, true
		}
	}
	return PlannedTest{}, false
}

// CheckSkipList compares the tests the plan must skip with the committed list. It returns nil
// when every test the declared features would run and that needs HTTP is listed, and every
// listed test exists and needs HTTP; else an error naming each difference. A listed test whose
// features are not declared is allowed (it applies once they are: the list can carry the
// HTTP-bound tests of extended features Blixt advertises, e.g. GatewayStaticAddresses), and
// is not skipped, since it does not run anyway.
func (p *Plan) CheckSkipList(list SkipList) error {
	var problems []string
	for _, name := range p.Names(SkipHTTP) {
		if _, ok := list[name]; !ok {
			t, _ := p.Lookup(name)
			problems = append(problems, fmt.Sprintf("%s must be skipped (%s) but is not in %s", name, strings.Join(t.HTTP, "; "), SkipListFile))
		}
	}
	for _, name := range list.Names() {
		t, ok := p.Lookup(name)
		switch {
		case !ok:
			problems = append(problems, fmt.Sprintf("%s is in %s but the suite has no such test", name, SkipListFile))
		case len(t.HTTP) == 0:
			problems = append(problems, fmt.Sprintf("%s is in %s but needs no HTTP listener: it must run", name, SkipListFile))
		}
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// Skips returns the part of the list the suite is told to skip: the listed tests that the
// declared features would run (the others are left out as NOT_SUPPORTED by the suite itself).
func (p *Plan) Skips(list SkipList) []string {
	var out []string
	for _, name := range list.Names() {
		if t, ok := p.Lookup(name); ok && t.Disposition == SkipHTTP {
			out = append(out, name)
		}
	}
	return out
}

// SkipList maps test names to the reason they are skipped.
type SkipList map[string]string

// Names returns the skipped tests, sorted.
func (s SkipList) Names() []string {
	return sets.List(sets.KeySet(s))
}

// ParseSkipList reads skipped.txt: one "TestName: reason" per line; blank lines and lines
// starting with '#' are ignored.
func ParseSkipList(r io.Reader) (SkipList, error) {
	out := SkipList{}
	scanner := bufio.NewScanner(r)
	line := 0
	for scanner.Scan() {
		line++
		text := strings.TrimSpace(scanner.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, reason, ok := strings.Cut(text, ":")
		name, reason = strings.TrimSpace(name), strings.TrimSpace(reason)
		if !ok || name == "" || reason == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("%s line %d: want \"TestName: reason\", got %q", SkipListFile, line, text)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("%s line %d: %s listed twice", SkipListFile, line, name)
		}
		out[name] = reason
	}
	return out, scanner.Err()
}

// httpNeeds lists why a test needs HTTP: a Gateway or ListenerSet listener of protocol HTTP or
// HTTPS in its manifests, an HTTPRoute or GRPCRoute, or a route attached to one of upstream's
// base Gateways (all HTTP) that the test does not define itself. What a test's Go code creates
// at run time is not seen here.
func httpNeeds(test suite.ConformanceTest, manifests fs.FS, httpBaseGateways map[string]bool) ([]string, error) {
	var reasons []string
	defined := map[string]bool{}
	var objects []object
	for _, path := range test.Manifests {
		objs, err := readObjects(manifests, path)
		if err != nil {
			return nil, err
		}
		for _, o := range objs {
			defined[o.key()] = true
		}
		objects = append(objects, objs...)
	}
	for _, o := range objects {
		switch o.kind() {
		case "Gateway", "ListenerSet", "XListenerSet":
			for _, l := range o.httpListeners() {
				reasons = append(reasons, fmt.Sprintf("%s %s listener %q is %s", o.kind(), o.name(), l.name, l.protocol))
			}
		case "HTTPRoute", "GRPCRoute":
			reasons = append(reasons, fmt.Sprintf("%s %s", o.kind(), o.name()))
		}
		if strings.HasSuffix(o.kind(), "Route") {
			for _, gw := range o.parentGateways() {
				if httpBaseGateways[gw] && !defined[gw] {
					reasons = append(reasons, fmt.Sprintf("%s %s is attached to upstream base Gateway %s (HTTP)", o.kind(), o.name(), strings.TrimPrefix(gw, "Gateway/")))
				}
			}
		}
	}
	return reasons, nil
}

// object is one decoded manifest document.
type object map[string]any

func (o object) kind() string { s, _ := o["kind"].(string); return s }

func (o object) meta(field string) string {
	m, _ := o["metadata"].(map[string]any)
	s, _ := m[field].(string)
	return s
}

func (o object) namespace() string { return o.meta("namespace") }

// name is namespace/name, or name for cluster-scoped objects.
func (o object) name() string {
	if ns := o.namespace(); ns != "" {
		return ns + "/" + o.meta("name")
	}
	return o.meta("name")
}

func (o object) key() string { return o.kind() + "/" + o.name() }

func (o object) spec() map[string]any { m, _ := o["spec"].(map[string]any); return m }

type listener struct{ name, protocol string }

func (o object) httpListeners() []listener {
	var out []listener
	items, _ := o.spec()["listeners"].([]any)
	for _, item := range items {
		l, _ := item.(map[string]any)
		name, _ := l["name"].(string)
		protocol, _ := l["protocol"].(string)
		if protocol == "HTTP" || protocol == "HTTPS" {
			out = append(out, listener{name, protocol})
		}
	}
	return out
}

// parentGateways returns the keys ("Gateway/ns/name") of the Gateways a route names.
func (o object) parentGateways() []string {
	var out []string
	refs, _ := o.spec()["parentRefs"].([]any)
	for _, item := range refs {
		ref, _ := item.(map[string]any)
		kind, _ := ref["kind"].(string)
		if kind != "" && kind != "Gateway" {
			continue
		}
		ns, _ := ref["namespace"].(string)
		if ns == "" {
			ns = o.namespace()
		}
		name, _ := ref["name"].(string)
		out = append(out, "Gateway/"+ns+"/"+name)
	}
	return out
}

// backendServices returns the Services ("Service/ns/name") a route's rules reference.
func (o object) backendServices() []string {
	var out []string
	rules, _ := o.spec()["rules"].([]any)
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		refs, _ := rule["backendRefs"].([]any)
		for _, item := range refs {
			ref, _ := item.(map[string]any)
			kind, _ := ref["kind"].(string)
			group, _ := ref["group"].(string)
			if (kind != "" && kind != "Service") || group != "" {
				continue
			}
			ns, _ := ref["namespace"].(string)
			if ns == "" {
				ns = o.namespace()
			}
			name, _ := ref["name"].(string)
			out = append(out, "Service/"+ns+"/"+name)
		}
	}
	return out
}

func readObjects(fsys fs.FS, path string) ([]object, error) {
	data, err := fs.ReadFile(fsys, path)
	if err != nil {
		return nil, err
	}
	return decodeObjects(data)
}

func decodeObjects(data []byte) ([]object, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []object
	for {
		var o object
		if err := decoder.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if len(o) > 0 {
			out = append(out, o)
		}
	}
}

// ReadSkipList reads the skip list compiled into the runner.
func ReadSkipList() (SkipList, error) {
	f, err := Files.Open(SkipListFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseSkipList(f)
}
