package conformance

import (
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/sets"

	upstream "sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// These tests need no cluster: they check the committed skip list and base manifest against
// the suite in go.mod, so a version bump that adds, removes or changes a test fails here first.

func defaultPlan(t *testing.T) *Plan {
	t.Helper()
	supported, err := EffectiveFeatures(SupportedFeatures, Profiles)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(tests.ConformanceTests, &upstream.Manifests, Profiles, supported)
	if err != nil {
		t.Fatal(err)
	}
	return plan
}

// TestPlan prints what runs and what is skipped, per profile (go test -run TestPlan -v).
func TestPlan(t *testing.T) {
	plan := defaultPlan(t)
	list, err := ReadSkipList()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, profile := range Profiles {
		run := plan.InProfile(profile, Run)
		skip := plan.InProfile(profile, SkipHTTP)
		fmt.Fprintf(&b, "%s: %d to run, %d skipped\n", profile, len(run), len(skip))
		for _, pt := range run {
			fmt.Fprintf(&b, "  run   %s%s\n", pt.Test.ShortName, extendedMark(pt, profile))
		}
		for _, pt := range skip {
			fmt.Fprintf(&b, "  skip  %s: %s\n", pt.Test.ShortName, list[pt.Test.ShortName])
		}
	}
	for _, name := range list.Names() {
		if pt, _ := plan.Lookup(name); pt.Disposition == NotSupported {
			fmt.Fprintf(&b, "listed, applies once %s is declared: %s\n", joinFeatures(pt.Missing), name)
		}
	}
	fmt.Fprintf(&b, "in total: %d tests run, %d skipped for HTTP, %d not supported\n",
		len(plan.Names(Run)), len(plan.Names(SkipHTTP)), len(plan.Names(NotSupported)))
	t.Log("\n" + b.String())
}

func extendedMark(pt PlannedTest, profile suite.ConformanceProfileName) string {
	if pt.Extended[profile] {
		return " (extended)"
	}
	return ""
}

// TestSkipListMatchesSuite: skipped.txt names exactly the tests that need HTTP listeners
// among those the declared features would run.
func TestSkipListMatchesSuite(t *testing.T) {
	plan := defaultPlan(t)
	list, err := ReadSkipList()
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.CheckSkipList(list); err != nil {
		t.Fatalf("%s differs from the suite:\n%v", SkipListFile, err)
	}
}

// TestBaseManifestCoversRunnableTests: every Service a runnable test routes to without
// defining it, and which upstream's base defines, is in our base too (a missing one would
// make the test fail for a reason that is not Blixt's); and our base has no HTTP listener.
func TestBaseManifestCoversRunnableTests(t *testing.T) {
	plan := defaultPlan(t)
	ours, err := readObjects(Files, BaseManifests)
	if err != nil {
		t.Fatal(err)
	}
	theirs, err := readObjects(&upstream.Manifests, "base/manifests.yaml")
	if err != nil {
		t.Fatal(err)
	}
	keys := func(objs []object) sets.Set[string] {
		out := sets.New[string]()
		for _, o := range objs {
			out.Insert(o.key())
		}
		return out
	}
	ourKeys, theirKeys := keys(ours), keys(theirs)

	for _, o := range ours {
		if l := o.httpListeners(); len(l) > 0 {
			t.Errorf("%s %s in %s has HTTP listeners %v", o.kind(), o.name(), BaseManifests, l)
		}
		if o.kind() == "Namespace" {
			continue
		}
		if !theirKeys.Has(o.key()) {
			t.Errorf("%s %s is in %s but not in upstream's base: upstream tests cannot expect it", o.kind(), o.name(), BaseManifests)
		}
	}
	for _, ns := range []string{suite.InfrastructureNamespace, suite.AppBackendNamespace, suite.WebBackendNamespace} {
		if !ourKeys.Has("Namespace/" + ns) {
			t.Errorf("namespace %s missing from %s (Setup creates Secrets in it and waits for its Pods)", ns, BaseManifests)
		}
	}

	for _, pt := range plan.Tests {
		if pt.Disposition != Run {
			continue
		}
		var objs []object
		for _, path := range pt.Test.Manifests {
			o, err := readObjects(&upstream.Manifests, path)
			if err != nil {
				t.Fatal(err)
			}
			objs = append(objs, o...)
		}
		defined := keys(objs)
		for _, o := range objs {
			if !strings.HasSuffix(o.kind(), "Route") {
				continue
			}
			for _, svc := range o.backendServices() {
				if defined.Has(svc) || ourKeys.Has(svc) || !theirKeys.Has(svc) {
					continue // the test's own, ours, or deliberately nonexistent
				}
				t.Errorf("%s: %s %s routes to %s, which upstream's base defines but %s does not",
					pt.Test.ShortName, o.kind(), o.name(), svc, BaseManifests)
			}
			for _, gw := range o.parentGateways() {
				if !defined.Has(gw) && !ourKeys.Has(gw) {
					t.Errorf("%s: %s %s is attached to %s, defined neither by the test nor by %s",
						pt.Test.ShortName, o.kind(), o.name(), gw, BaseManifests)
				}
			}
		}
	}
}

// TestBaseManifestIsInTheManifestFS: the runner finds our base before upstream's.
func TestBaseManifestIsInTheManifestFS(t *testing.T) {
	data, err := fs.ReadFile(Files, BaseManifests)
	if err != nil || len(data) == 0 {
		t.Fatalf("reading %s from the embedded files: %v", BaseManifests, err)
	}
	if _, err := fs.Stat(&upstream.Manifests, BaseManifests); err == nil {
		t.Fatalf("upstream also has %s: it could shadow ours", BaseManifests)
	}
}

func TestParseSkipList(t *testing.T) {
	list, err := ParseSkipList(strings.NewReader("# comment\n\nA: needs HTTP: listener x\n  B : reason b \n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := list.Names(); !slices.Equal(got, []string{"A", "B"}) {
		t.Fatalf("names %v", got)
	}
	if list["A"] != "needs HTTP: listener x" || list["B"] != "reason b" {
		t.Fatalf("reasons %q", list)
	}
	for _, bad := range []string{"A\n", "A:\n", ": r\n", "A B: r\n", "A: r\nA: s\n"} {
		if _, err := ParseSkipList(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCheckSkipListReportsBothDirections(t *testing.T) {
	plan := defaultPlan(t)
	list, err := ReadSkipList()
	if err != nil {
		t.Fatal(err)
	}
	broken := SkipList{}
	for k, v := range list {
		broken[k] = v
	}
	missing := plan.Names(SkipHTTP)[0]
	delete(broken, missing)
	broken["UDPRoute"] = "pretend"
	broken["NoSuchTest"] = "pretend"
	broken["TLSRouteTerminateSimpleSameNamespace"] = "pretend" // not declared, and needs no HTTP
	err = plan.CheckSkipList(broken)
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{missing + " must be skipped", "UDPRoute is in", "NoSuchTest is in", "TLSRouteTerminateSimpleSameNamespace is in"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// gatewayClassFeatures is what Blixt's GatewayClass puts in status.supportedFeatures
// (crates/blixt-core/src/translator/config.rs, SUPPORTED_FEATURES). Declaring all of them
// (-supported-features) must work with the committed skip list too.
var gatewayClassFeatures = []features.FeatureName{
	features.SupportGateway,
	features.SupportGatewayAddressEmpty,
	features.SupportGatewayRouteHostnameIntersectionPrecedence,
	features.SupportGatewayStaticAddresses,
	features.SupportReferenceGrant,
	features.SupportTCPRoute,
	features.SupportTLSRoute,
	features.SupportUDPRoute,
}

func TestSkipListMatchesSuiteWithAdvertisedFeatures(t *testing.T) {
	supported, err := EffectiveFeatures(gatewayClassFeatures, Profiles)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := NewPlan(tests.ConformanceTests, &upstream.Manifests, Profiles, supported)
	if err != nil {
		t.Fatal(err)
	}
	list, err := ReadSkipList()
	if err != nil {
		t.Fatal(err)
	}
	if err := plan.CheckSkipList(list); err != nil {
		t.Fatalf("%s differs from the suite with the advertised features:\n%v", SkipListFile, err)
	}
	for _, name := range []string{"GatewayOptionalAddressValue", "GatewayStaticAddresses"} {
		if !slices.Contains(plan.Skips(list), name) {
			t.Errorf("%s not skipped with its feature declared", name)
		}
	}
	if pt, _ := plan.Lookup("TLSRouteMultipleRoutesAttachmentSameHostnameIntersection"); pt.Disposition != Run {
		t.Errorf("the hostname-precedence TLSRoute test does not run: %s", pt.Disposition)
	}
	// The default already declares the hostname-precedence feature; the other two advertised
	// features only add tests that need HTTP.
	if got := len(plan.Names(Run)); got != len(defaultPlan(t).Names(Run)) {
		t.Errorf("%d tests run with the advertised features", got)
	}
}
