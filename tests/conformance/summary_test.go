package conformance

import (
	"strings"
	"testing"

	confv1 "sigs.k8s.io/gateway-api/conformance/apis/v1"
)

// A report as the suite would produce it for a run where one TCP test failed.
func fakeReport(plan *Plan, list SkipList) *confv1.ConformanceReport {
	report := &confv1.ConformanceReport{
		Implementation:    confv1.Implementation{Project: "blixt", Version: "0.1.0"},
		GatewayAPIVersion: "v1.7.0", GatewayAPIChannel: "standard", Mode: "default",
	}
	for _, profile := range plan.Profiles {
		p := confv1.ProfileReport{Name: string(profile)}
		for _, pt := range plan.InProfile(profile, Run) {
			if pt.Test.ShortName == "TCPRouteWeightedRouting" {
				p.Core.Failed++
				p.Core.FailedTests = append(p.Core.FailedTests, pt.Test.ShortName)
			} else {
				p.Core.Passed++
			}
		}
		for _, pt := range plan.InProfile(profile, SkipHTTP) {
			p.Core.Skipped++
			p.Core.SkippedTests = append(p.Core.SkippedTests, pt.Test.ShortName)
		}
		p.Core.Result = confv1.Partial
		report.ProfileReports = append(report.ProfileReports, p)
	}
	return report
}

func TestSummaryAndReportedSkips(t *testing.T) {
	plan := defaultPlan(t)
	list, err := ReadSkipList()
	if err != nil {
		t.Fatal(err)
	}
	report := fakeReport(plan, list)
	if err := plan.CheckReportedSkips(report, list); err != nil {
		t.Fatalf("matching skips reported as different: %v", err)
	}

	md := Summary(report, plan, list, RunInfo{GatewayClass: "blixt", Advertised: []string{
		"Gateway", "GatewayRouteHostnameIntersectionPrecedence", "GatewayStaticAddresses", "ReferenceGrant",
		"TCPRoute", "TLSRoute", "UDPRoute"}})
	for _, want := range []string{
		"| GATEWAY-TCP | partial | 7 | 1 | 12 |",
		"| GATEWAY-UDP | partial | 10 | 0 | 11 |",
		"| GATEWAY-TLS | partial | 10 | 0 | 12 |",
		"  - failed: `TCPRouteWeightedRouting`",
		"  - skipped: `TCPRouteInvalidNonTCPListener`: the Gateway's only listener is HTTP",
		"TLSRouteTerminateSimpleSameNamespace (needs TLSRouteModeTerminate)",
		"  - advertised but not declared to the suite (their tests did not run): GatewayStaticAddresses\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "declared but not advertised") {
		t.Error("summary says a declared feature is not advertised")
	}
	if strings.Contains(md, "Setup failed") {
		t.Error("summary says Setup failed")
	}

	// A test skipped at run time for another reason, and a listed test that ran.
	tcp := &report.ProfileReports[0]
	tcp.Core.SkippedTests = append(tcp.Core.SkippedTests[1:], "TCPRouteReferenceGrant")
	err = plan.CheckReportedSkips(report, list)
	if err == nil || !strings.Contains(err.Error(), "TCPRouteReferenceGrant was skipped but is not in") {
		t.Errorf("runtime skip not reported: %v", err)
	}
	md = Summary(report, plan, list, RunInfo{GatewayClass: "blixt", SetupFailed: true})
	for _, want := range []string{"**Setup failed: no test ran.**", "`TCPRouteReferenceGrant`: skipped at run time"} {
		if !strings.Contains(md, want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func TestSummaryWithoutResults(t *testing.T) {
	plan := defaultPlan(t)
	md := Summary(&confv1.ConformanceReport{}, plan, SkipList{}, RunInfo{SetupFailed: true})
	if !strings.Contains(md, "| GATEWAY-UDP | not run |") || !strings.Contains(md, "No result: no test of this profile ran.") {
		t.Errorf("summary:\n%s", md)
	}
}
