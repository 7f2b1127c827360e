// Command alphaswarm-example-go is a Go client for alphaswarm-controller.
//
// It starts a `sleep 300` service with 2 replicas on the `local` provider, prints
// a few StreamMetrics samples, stops the service and exits 0. With -attach it only
// streams the metrics of a service that is already running and leaves it running.
// On a gRPC error it prints the status code and the google.rpc.Status details
// (ErrorInfo reason and metadata, BadRequest fields, ResourceInfo, RetryInfo),
// stops what it started, and exits 1.
//
// The gRPC code under gen/ is generated from ../../protos by `buf generate`
// (see buf.gen.yaml and ../README.md); it is not checked in.
//
// Usage: go run . [-target HOST:PORT] [-samples N] [-attach] [-env KEY=VALUE]...
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	providerv1 "example.com/alphaswarm-example-go/gen/alphaswarm/provider/v1"
)

const unaryTimeout = 30 * time.Second

// codeNames are the canonical gRPC code names, as the other clients print them.
var codeNames = []string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
	"ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
	"UNAUTHENTICATED",
}

type options struct {
	target, token, provider, namespace, service string
	useTLS, attach                              bool
	caCert, clientCert, clientKey, serverName   string
	replicas, samples                           int
	interval                                    time.Duration
	env                                         envFlag
}

// envFlag collects repeated -env KEY=VALUE flags.
type envFlag map[string]string

func (e envFlag) String() string { return fmt.Sprint(map[string]string(e)) }

func (e envFlag) Set(pair string) error {
	key, value, ok := strings.Cut(pair, "=")
	if !ok || key == "" {
		return fmt.Errorf("want KEY=VALUE, got %q", pair)
	}
	e[key] = value
	return nil
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

func parseOptions() options {
	opts := options{env: envFlag{}}
	flag.StringVar(&opts.target, "target", getenv("ALPHASWARM_TARGET", "127.0.0.1:50051"), "server address host:port (env ALPHASWARM_TARGET)")
	flag.StringVar(&opts.token, "token", os.Getenv("ALPHASWARM_TOKEN"), "bearer token sent as 'authorization: Bearer ...' (env ALPHASWARM_TOKEN)")
	flag.BoolVar(&opts.useTLS, "tls", false, "use TLS with the system's root certificates")
	flag.StringVar(&opts.caCert, "ca-cert", os.Getenv("ALPHASWARM_CA_CERT"), "use TLS and verify the server with this CA bundle (env ALPHASWARM_CA_CERT)")
	flag.StringVar(&opts.clientCert, "client-cert", "", "client certificate for mutual TLS, with -client-key (implies TLS)")
	flag.StringVar(&opts.clientKey, "client-key", "", "client private key for mutual TLS")
	flag.StringVar(&opts.serverName, "tls-server-name", "", "expected name in the server certificate, when it differs from the host")
	flag.StringVar(&opts.provider, "provider", getenv("ALPHASWARM_PROVIDER", "local"), "provider alias (env ALPHASWARM_PROVIDER)")
	flag.StringVar(&opts.namespace, "namespace", "examples", "namespace of the service")
	flag.StringVar(&opts.service, "service", "go-example", "service id")
	flag.IntVar(&opts.replicas, "replicas", 2, "replicas to start")
	flag.IntVar(&opts.samples, "samples", 4, "metric samples to print before stopping")
	flag.DurationVar(&opts.interval, "interval", 500*time.Millisecond, "time between samples")
	flag.Var(opts.env, "env", "environment variable KEY=VALUE of every replica (repeatable)")
	flag.BoolVar(&opts.attach, "attach", false, "stream the metrics of a running service; do not start or stop it")
	flag.Parse()
	if (opts.clientCert == "") != (opts.clientKey == "") {
		fmt.Fprintln(os.Stderr, "-client-cert and -client-key go together")
		os.Exit(2)
	}
	return opts
}

// transport returns plaintext credentials, or TLS when any TLS option is set.
func transport(opts options) (credentials.TransportCredentials, error) {
	if !opts.useTLS && opts.caCert == "" && opts.clientCert == "" {
		return insecure.NewCredentials(), nil
	}
	config := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: opts.serverName}
	if opts.caCert != "" { // else nil RootCAs: the system's root certificates
		pem, err := os.ReadFile(opts.caCert)
		if err != nil {
			return nil, err
		}
		config.RootCAs = x509.NewCertPool()
		if !config.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", opts.caCert)
		}
	}
	if opts.clientCert != "" {
		pair, err := tls.LoadX509KeyPair(opts.clientCert, opts.clientKey)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(config), nil
}

// describe renders a gRPC error with its code and the decoded status details.
func describe(method string, err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return fmt.Sprintf("error: %s failed: %v", method, err)
	}
	name := "UNKNOWN"
	if int(st.Code()) < len(codeNames) {
		name = codeNames[st.Code()]
	}
	lines := []string{fmt.Sprintf("error: %s failed: %s (%d): %s", method, name, st.Code(), st.Message())}
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.ErrorInfo:
			lines = append(lines, fmt.Sprintf("  reason: %s (domain %s)", d.GetReason(), d.GetDomain()))
			keys := make([]string, 0, len(d.GetMetadata()))
			for key := range d.GetMetadata() {
				keys = append(keys, key)
			}
			sort.Strings(keys)
			for _, key := range keys {
				lines = append(lines, fmt.Sprintf("  metadata %s: %s", key, d.GetMetadata()[key]))
			}
		case *errdetails.BadRequest:
			for _, violation := range d.GetFieldViolations() {
				lines = append(lines, fmt.Sprintf("  field %s: %s", violation.GetField(), violation.GetDescription()))
			}
		case *errdetails.ResourceInfo:
			lines = append(lines, fmt.Sprintf("  resource %s: %s", d.GetResourceType(), d.GetResourceName()))
		case *errdetails.RetryInfo:
			lines = append(lines, fmt.Sprintf("  retry after %s", d.GetRetryDelay().AsDuration()))
		}
	}
	return strings.Join(lines, "\n")
}

func statusLine(verb string, s *providerv1.DeploymentStatus) string {
	return fmt.Sprintf("%s %s/%s on %s: state=%s desired=%d ready=%d",
		verb, s.GetNamespace(), s.GetServiceId(), s.GetProvider(), s.GetState(),
		s.GetDesiredReplicas(), s.GetReadyReplicas())
}

func stamp(ts *timestamppb.Timestamp) string {
	if ts == nil {
		return "-"
	}
	return ts.AsTime().UTC().Format("2006-01-02T15:04:05.000Z")
}

func sampleLine(s *providerv1.MetricSample, index int) string {
	tail := "ok"
	if !s.GetOk() {
		tail = "not ok: " + s.GetError()
	}
	return fmt.Sprintf("sample %d: at=%s replicas=%d cpu=%.1f%% memory=%.1fMiB rx=%d tx=%d %s",
		index, stamp(s.GetTimestamp()), s.GetReplicas(), s.GetCpuPercent(),
		float64(s.GetMemoryBytes())/(1<<20), s.GetNetworkRxBytes(), s.GetNetworkTxBytes(), tail)
}

// streamMetrics prints `samples` samples, then cancels the stream (the server
// streams until the caller cancels). Ctrl-C ends the stream early.
func streamMetrics(ctx context.Context, client providerv1.ProviderServiceClient, req *providerv1.StreamMetricsRequest, samples int) (int, error) {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	// A generous deadline so a stalled backend cannot hang the example forever.
	ctx, cancel := context.WithTimeout(ctx, time.Duration(samples)*req.GetInterval().AsDuration()+30*time.Second)
	defer cancel()
	stream, err := client.StreamMetrics(ctx, req)
	if err != nil {
		return 0, err
	}
	for seen := 0; seen < samples; {
		response, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return seen, nil
		}
		if err != nil {
			if ctx.Err() != nil && status.Code(err) == codes.Canceled {
				return seen, nil // interrupted by Ctrl-C
			}
			return seen, err
		}
		seen++
		fmt.Println(sampleLine(response.GetSample(), seen))
	}
	return samples, nil
}

func run(opts options) int {
	creds, err := transport(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	dialOptions := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	conn, err := grpc.NewClient(opts.target, dialOptions...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		return 1
	}
	defer conn.Close()
	client := providerv1.NewProviderServiceClient(conn)

	ctx := context.Background()
	if opts.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+opts.token)
	}
	fmt.Printf("target %s, provider %s\n", opts.target, opts.provider)

	if !opts.attach {
		unary, cancel := context.WithTimeout(ctx, unaryTimeout)
		started, err := client.StartDeployment(unary, &providerv1.StartDeploymentRequest{
			Provider: opts.provider,
			Spec: &providerv1.DeploymentSpec{
				ServiceId: opts.service,
				Namespace: opts.namespace,
				Command:   []string{"sleep", "300"},
				Replicas:  int32(opts.replicas),
				Env:       opts.env,
				Labels:    map[string]string{"app.kubernetes.io/managed-by": "alphaswarm-example-go"},
			},
		})
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, describe("StartDeployment", err))
			return 1
		}
		fmt.Println(statusLine("started", started.GetStatus()))
	}

	failed := false
	seen, err := streamMetrics(ctx, client, &providerv1.StreamMetricsRequest{
		Provider:  opts.provider,
		ServiceId: opts.service,
		Namespace: opts.namespace,
		Interval:  durationpb.New(opts.interval),
	}, opts.samples)
	if err != nil {
		failed = true
		fmt.Fprintln(os.Stderr, describe("StreamMetrics", err))
	} else {
		fmt.Printf("received %d samples\n", seen)
	}
	if opts.attach { // the service is someone else's: leave it as it was
		if failed {
			return 1
		}
		return 0
	}

	// Stop even after a failed stream: the example must not leave replicas behind.
	unary, cancel := context.WithTimeout(ctx, unaryTimeout)
	stopped, err := client.StopDeployment(unary, &providerv1.StopDeploymentRequest{
		Provider: opts.provider, ServiceId: opts.service, Namespace: opts.namespace,
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, describe("StopDeployment", err))
		return 1
	}
	fmt.Println(statusLine("stopped", stopped.GetStatus()))
	if failed {
		return 1
	}
	return 0
}

func main() {
	os.Exit(run(parseOptions()))
}
