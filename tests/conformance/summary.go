package conformance

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/util/sets"

	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
)

// RunInfo is what the summary says about the run besides the report.
type RunInfo struct {
	GatewayClass string
	// SetupFailed: the suite's Setup stopped the run before any test (the log says why).
	SetupFailed bool
	// SingleTest is the -run-test value, if any.
	SingleTest string
	// Advertised is the GatewayClass's status.supportedFeatures (nil when it could not be read).
	Advertised []string
}

// ReportedSkips returns every test the report lists as skipped, in any profile.
func ReportedSkips(report *confv1.ConformanceReport) sets.Set[string] {
	out := sets.New[string]()
	for _, p := range report.ProfileReports {
		out.Insert(p.Core.SkippedTests...)
		if p.Extended != nil {
			out.Insert(p.Extended.SkippedTests...)
		}
	}
	return out
}

// ExpectedReportedSkips is the part of the skip list the report can show: the listed tests the
// suite is told to skip (see Plan.Skips) that count in at least one selected profile.
func (p *Plan) ExpectedReportedSkips(list SkipList) sets.Set[string] {
	out := sets.New[string]()
	for _, name := range p.Skips(list) {
		if t, _ := p.Lookup(name); len(t.Profiles) > 0 {
			out.Insert(name)
		}
	}
	return out
}

// CheckReportedSkips compares the report's skipped tests with the skip list: a test skipped at
// run time for another reason, or a listed test the suite ran, is an error.
func (p *Plan) CheckReportedSkips(report *confv1.ConformanceReport, list SkipList) error {
	got, want := ReportedSkips(report), p.ExpectedReportedSkips(list)
	var problems []string
	for _, name := range sets.List(got.Difference(want)) {
		problems = append(problems, fmt.Sprintf("%s was skipped but is not in %s (skipped at run time: see its log)", name, SkipListFile))
	}
	for _, name := range sets.List(want.Difference(got)) {
		problems = append(problems, fmt.Sprintf("%s is in %s but the report does not list it as skipped", name, SkipListFile))
	}
	if len(problems) > 0 {
		return fmt.Errorf("the tests skipped differ from %s:\n%s", SkipListFile, strings.Join(problems, "\n"))
	}
	return nil
}

// Summary renders summary.md: per profile, the counts, each failed test, each skipped test with
// its reason, and the profile's tests left out because an extended feature is not claimed.
func Summary(report *confv1.ConformanceReport, plan *Plan, list SkipList, info RunInfo) string {
	var b strings.Builder
	impl := report.Implementation
	fmt.Fprintf(&b, "# Gateway API conformance: %s %s\n\n", impl.Project, impl.Version)
	fmt.Fprintf(&b, "- Suite: `sigs.k8s.io/gateway-api/conformance` %s, profiles %s\n", SuiteVersion, profileList(plan.Profiles))
	fmt.Fprintf(&b, "- Cluster CRDs: Gateway API %s, channel %s\n", report.GatewayAPIVersion, report.GatewayAPIChannel)
	fmt.Fprintf(&b, "- GatewayClass: `%s`, mode %s, date %s\n", info.GatewayClass, report.Mode, report.Date)
	fmt.Fprintf(&b, "- Declared features: %s\n", strings.Join(sortedStrings(sets.List(plan.Supported)), ", "))
	if info.Advertised != nil {
		advertised := sets.New(info.Advertised...)
		declared := sets.New[string]()
		for f := range plan.Supported {
			declared.Insert(string(f))
		}
		fmt.Fprintf(&b, "- GatewayClass status.supportedFeatures: %s\n", strings.Join(sets.List(advertised), ", "))
		if extra := advertised.Difference(declared); extra.Len() > 0 {
			fmt.Fprintf(&b, "  - advertised but not declared to the suite (their tests did not run): %s\n", strings.Join(sets.List(extra), ", "))
		}
		if missing := declared.Difference(advertised); missing.Len() > 0 {
			fmt.Fprintf(&b, "  - declared but not advertised: %s\n", strings.Join(sets.List(missing), ", "))
		}
	}
	fmt.Fprintf(&b, "- Skipped: the tests in `tests/conformance/%s`, which need HTTP or HTTPS listeners (an L4-only implementation rejects them)\n", SkipListFile)
	if info.SingleTest != "" {
		fmt.Fprintf(&b, "- Single test run: `%s` (every other test counts as skipped)\n", info.SingleTest)
	}
	b.WriteString("\n")
	if info.SetupFailed {
		b.WriteString("**Setup failed: no test ran.** The GatewayClass was not Accepted, the base manifests could not be " +
			"applied, or the Gateways and Pods in gateway-conformance-infra, -app-backend and -web-backend did not " +
			"become ready in time; see the runner's log.\n\n")
	}

	b.WriteString("| Profile | Core | passed | failed | skipped | Extended | passed | failed | skipped |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|\n")
	reports := map[string]confv1.ProfileReport{}
	for _, p := range report.ProfileReports {
		reports[p.Name] = p
	}
	for _, name := range plan.Profiles {
		p, ok := reports[string(name)]
		if !ok {
			fmt.Fprintf(&b, "| %s | not run | | | | | | | |\n", name)
			continue
		}
		ext := "none"
		var ep, ef, es string
		if p.Extended != nil {
			ext = string(p.Extended.Result)
			ep, ef, es = fmt.Sprint(p.Extended.Passed), fmt.Sprint(p.Extended.Failed), fmt.Sprint(p.Extended.Skipped)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %d | %d | %s | %s | %s | %s |\n", name, p.Core.Result, p.Core.Passed, p.Core.Failed, p.Core.Skipped, ext, ep, ef, es)
	}

	for _, name := range plan.Profiles {
		fmt.Fprintf(&b, "\n## %s\n\n", name)
		p, ok := reports[string(name)]
		if !ok {
			b.WriteString("No result: no test of this profile ran.\n")
		} else {
			writeStatus(&b, "Core", p.Core, list)
			if p.Extended != nil {
				writeStatus(&b, "Extended", p.Extended.Status, list)
			}
		}
		var unclaimed []string
		for _, t := range plan.InProfile(name, NotSupported) {
			unclaimed = append(unclaimed, fmt.Sprintf("%s (needs %s)", t.Test.ShortName, joinFeatures(t.Missing)))
		}
		if len(unclaimed) > 0 {
			fmt.Fprintf(&b, "- Not run, extended features not claimed (%d): %s\n", len(unclaimed), strings.Join(unclaimed, ", "))
		}
	}
	return b.String()
}

func writeStatus(b *strings.Builder, part string, s confv1.Status, list SkipList) {
	fmt.Fprintf(b, "- %s: **%s**: %d passed, %d failed, %d skipped\n", part, s.Result, s.Passed, s.Failed, s.Skipped)
	for _, name := range sortedStrings(s.FailedTests) {
		fmt.Fprintf(b, "  - failed: `%s`\n", name)
	}
	for _, name := range sortedStrings(s.SkippedTests) {
		reason, ok := list[name]
		if !ok {
			reason = "skipped at run time, not in the skip list (see the log)"
		}
		fmt.Fprintf(b, "  - skipped: `%s`: %s\n", name, reason)
	}
}

func profileList(profiles []suite.ConformanceProfileName) string {
	var names []string
	for _, p := range profiles {
		names = append(names, string(p))
	}
	return strings.Join(names, ", ")
}

func joinFeatures[T ~string](fs []T) string {
	var out []string
	for _, f := range fs {
		out = append(out, string(f))
	}
	return strings.Join(out, ", ")
}

func sortedStrings[T ~string](in []T) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		out = append(out, string(s))
	}
	sort.Strings(out)
	return slices.Compact(out)
}
