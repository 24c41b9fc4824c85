package conformance

import (
	"context"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"sigs.k8s.io/yaml"

	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	upstream "sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/flags"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// Flags of our own; every upstream flag (-gateway-class, -report-output, -version, -debug,
// -run-test, -timeout-config-overrides, -allow-crds-mismatch, -cleanup-base-resources...)
// works as it does for upstream's TestConformance, and so does controller-runtime's -kubeconfig.
var (
	summaryOutput = flag.String("summary-output", "", "where to write summary.md (default: summary.md beside -report-output)")
	skipListPath  = flag.String("skip-list", "", "a skip list to use instead of tests/conformance/skipped.txt (compiled in)")
)

// Implementation details for the report, when the flags do not give them.
const (
	DefaultGatewayClass = "blixt"
	DefaultOrganization = "blixt"
	DefaultProject      = "blixt"
	DefaultURL          = "https://github.com/kubernetes-sigs/blixt"
	DefaultContact      = "https://github.com/kubernetes-sigs/blixt/issues/new"
)

// TestConformance runs the upstream suite against the cluster of -kubeconfig (or $KUBECONFIG)
// with Blixt's profiles, features, base manifest and skip list, and writes the upstream
// ConformanceReport (-report-output) and summary.md. Without a cluster it skips.
func TestConformance(t *testing.T) {
	if !clusterGiven() {
		t.Skip("no cluster: pass -kubeconfig FILE or set KUBECONFIG (see docs/conformance.md)")
	}
	explicit := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { explicit[f.Name] = true })

	// Upstream's own option handling: logger, clients and schemes from the kubeconfig, the
	// -conformance-options-file, then every upstream flag that was set.
	opts := upstream.DefaultOptions(t)

	if !explicit["gateway-class"] && opts.GatewayClassName == flags.DefaultGatewayClassName {
		opts.GatewayClassName = DefaultGatewayClass
	}
	if len(opts.ConformanceProfiles) == 0 {
		opts.ConformanceProfiles = Profiles
	}
	if len(opts.SupportedFeatures) == 0 && !opts.EnableAllSupportedFeatures {
		opts.SupportedFeatures = SupportedFeatures
	}
	if len(opts.SkipTests) > 0 {
		t.Fatalf("-skip-tests / skipTests would bypass the skip list's check: edit tests/conformance/%s or pass -skip-list FILE", SkipListFile)
	}
	// Sequential: the tests share gateway-conformance-infra, and those that wait for "every
	// Gateway in the namespace" to be Programmed would see each other's Gateways; the suite
	// also swaps its shared client per test. (The report itself is written in a Cleanup, after
	// every subtest, parallel or not.)
	opts.DisableParallelTests = true
	opts.ManifestFS = []fs.FS{Files, &upstream.Manifests}
	opts.BaseManifests = BaseManifests

	impl := &opts.Implementation
	setDefault(&impl.Organization, DefaultOrganization)
	setDefault(&impl.Project, DefaultProject)
	setDefault(&impl.URL, DefaultURL)
	if len(impl.Contact) == 0 {
		impl.Contact = []string{DefaultContact}
	}
	if opts.ReportOutputPath != "" {
		if impl.Version == "" {
			t.Fatal("-version is required with -report-output (hack/conformance.sh passes the workspace version)")
		}
		require.NoError(t, impl.Validate(), "implementation details for the report")
	}

	// What runs and what is skipped, decided before touching the cluster.
	effective, err := effectiveFeatures(opts)
	require.NoError(t, err)
	plan, err := NewPlan(tests.ConformanceTests, &upstream.Manifests, opts.ConformanceProfiles, effective)
	require.NoError(t, err, "classifying the suite's tests")
	list, err := loadSkipList()
	require.NoError(t, err)
	if err := plan.CheckSkipList(list); err != nil {
		t.Fatalf("the tests that need HTTP differ from the skip list; fix %s:\n%v", SkipListFile, err)
	}
	opts.SkipTests = plan.Skips(list)
	t.Logf("Blixt runner: %d tests to run, %d skipped (need HTTP), %d not supported; profiles %v; features %v",
		len(plan.Names(Run)), len(plan.Names(SkipHTTP)), len(plan.Names(NotSupported)),
		opts.ConformanceProfiles, sets.List(effective))

	cSuite, err := suite.NewConformanceTestSuite(opts)
	require.NoError(t, err, "error initializing conformance suite")

	ran := false
	t.Cleanup(func() {
		report, err := cSuite.Report()
		if err != nil {
			t.Errorf("generating the report: %v", err)
			return
		}
		if opts.ReportOutputPath != "" {
			data, err := yaml.Marshal(report)
			if err == nil {
				err = writeFile(opts.ReportOutputPath, data)
			}
			if err != nil {
				t.Errorf("writing the report: %v", err)
			} else {
				t.Logf("report: %s", opts.ReportOutputPath)
			}
		}
		summary := Summary(report, plan, list, RunInfo{
			GatewayClass: opts.GatewayClassName,
			SetupFailed:  !ran,
			SingleTest:   opts.RunTest,
			Advertised:   advertisedFeatures(t, opts),
		})
		t.Log("\n" + summary)
		if path := summaryPath(opts.ReportOutputPath); path != "" {
			if err := writeFile(path, []byte(summary)); err != nil {
				t.Errorf("writing the summary: %v", err)
			} else {
				t.Logf("summary: %s", path)
			}
		}
		if ran && opts.RunTest == "" {
			if err := plan.CheckReportedSkips(report, list); err != nil {
				t.Error(err)
			}
		}
	})

	cSuite.Setup(t, tests.ConformanceTests)
	err = cSuite.Run(t, tests.ConformanceTests)
	ran = true
	require.NoError(t, err)
}

// advertisedFeatures reads the GatewayClass's status.supportedFeatures, to show next to what
// was declared (nil when the GatewayClass cannot be read).
func advertisedFeatures(t *testing.T, opts suite.ConformanceOptions) []string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gwc := &gatewayv1.GatewayClass{}
	if err := opts.Client.Get(ctx, types.NamespacedName{Name: opts.GatewayClassName}, gwc); err != nil {
		t.Logf("reading GatewayClass %s: %v", opts.GatewayClassName, err)
		return nil
	}
	out := []string{}
	for _, f := range gwc.Status.SupportedFeatures {
		out = append(out, string(f.Name))
	}
	return out
}

// effectiveFeatures is the feature set NewConformanceTestSuite will end up with.
func effectiveFeatures(opts suite.ConformanceOptions) (sets.Set[features.FeatureName], error) {
	declared := sets.New(opts.SupportedFeatures...)
	if opts.EnableAllSupportedFeatures {
		declared = features.SetsToNamesSet(features.AllFeatures)
	}
	declared = declared.Difference(sets.New(opts.ExemptFeatures...))
	return EffectiveFeatures(sets.List(declared), opts.ConformanceProfiles)
}

func clusterGiven() bool {
	if f := flag.Lookup("kubeconfig"); f != nil && f.Value.String() != "" {
		return true
	}
	return os.Getenv("KUBECONFIG") != ""
}

func loadSkipList() (SkipList, error) {
	if *skipListPath == "" {
		return ReadSkipList()
	}
	f, err := os.Open(*skipListPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseSkipList(f)
}

func summaryPath(reportPath string) string {
	if *summaryOutput != "" {
		return *summaryOutput
	}
	if reportPath == "" {
		return ""
	}
	return filepath.Join(filepath.Dir(reportPath), "summary.md")
}

func setDefault(field *string, value string) {
	if strings.TrimSpace(*field) == "" {
		*field = value
	}
}

func writeFile(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
