package main

// `sipedge ctl` — the operator CLI over the control API (DESIGN.md §6). It is a client
// only: every change goes through the same HTTP API as curl's, so there is no second way
// to change data. This file holds the entry point, the global flags, argument parsing and
// the exit-code contract; ctl_commands.go the commands, ctl_client.go the HTTP client,
// ctl_table.go the table output and ctl_completion.go the shell completion.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"
)

// Exit codes of `sipedge ctl` (DESIGN.md §6).
const (
	exitOK    = 0 // success
	exitAPI   = 1 // the API refused (message on stderr) or could not be reached
	exitUsage = 2 // bad usage: unknown command or flag, missing required flag or argument
)

// defaultAPIURL is where ctl looks for the API without SIPEDGE_API_URL or --api-url.
const defaultAPIURL = "http://127.0.0.1:8080"

// usageError is bad usage: printed with a hint to the help, exit 2.
type usageError struct {
	msg  string
	help string // the help to run, e.g. "sipedge ctl acl --help"; "" the top one
}

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// ctlEnv is one invocation of ctl: its streams, environment and global options.
type ctlEnv struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	apiURL string // --api-url, SIPEDGE_API_URL, or defaultAPIURL
	output string // -o: "table" or "json"
	api    *apiClient
}

// globalFlags registers the options every ctl command accepts, before or after the
// command words (`ctl -o json acl list` and `ctl acl list -o json` are the same).
func (e *ctlEnv) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&e.apiURL, "api-url", e.apiURL, "control API base `URL` (env SIPEDGE_API_URL)")
	fs.StringVar(&e.output, "o", e.output, "output `format`: table or json")
	fs.StringVar(&e.output, "output", e.output, "output `format`: table or json (same as -o)")
}

// runCtl is `sipedge ctl ARGS…` without the process exit, so tests can drive it with
// their own environment and streams. It returns the exit code.
func runCtl(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &ctlEnv{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr, output: "table"}
	e.apiURL = getenv("SIPEDGE_API_URL")
	if e.apiURL == "" {
		e.apiURL = defaultAPIURL
	}
	err := e.dispatch(ctx, args)
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		help := ue.help
		if help == "" {
			help = "sipedge ctl --help"
		}
		fmt.Fprintf(stderr, "sipedge ctl: %s\nRun '%s' for usage.\n", ue.msg, help)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "sipedge ctl: %s\n", err)
		return exitAPI
	}
}

// dispatch parses the global flags, finds the command and runs it.
func (e *ctlEnv) dispatch(ctx context.Context, args []string) error {
	fs := e.newFlagSet("sipedge ctl")
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		e.usage(e.stdout)
	}
	if err != nil {
		return e.flagError(err)
	}
	words := fs.Args()
	if len(words) == 0 {
		e.usage(e.stderr)
		return usagef("missing command")
	}
	if words[0] == "help" {
		return e.help(words[1:])
	}
	g := findGroup(words[0])
	if g == nil {
		return usagef("unknown command %q", words[0])
	}
	if g.self != nil {
		return e.runCommand(ctx, g.self, words[1:])
	}
	if len(words) == 1 {
		return &usageError{msg: fmt.Sprintf("%s: missing subcommand (%s)", g.name, strings.Join(g.subNames(), ", ")),
			help: "sipedge ctl " + g.name + " --help"}
	}
	switch words[1] {
	case "-h", "-help", "--help", "help":
		e.groupUsage(e.stdout, g)
		return flag.ErrHelp
	}
	cmd := g.find(words[1])
	if cmd == nil {
		return &usageError{msg: fmt.Sprintf("%s: unknown subcommand %q (want %s)", g.name, words[1], strings.Join(g.subNames(), ", ")),
			help: "sipedge ctl " + g.name + " --help"}
	}
	return e.runCommand(ctx, cmd, words[2:])
}

// help answers `sipedge ctl help [GROUP [SUBCOMMAND]]`.
func (e *ctlEnv) help(words []string) error {
	if len(words) == 0 {
		e.usage(e.stdout)
		return flag.ErrHelp
	}
	g := findGroup(words[0])
	if g == nil {
		return usagef("help: unknown command %q", words[0])
	}
	if g.self != nil || len(words) == 1 {
		if g.self != nil {
			e.commandUsage(e.stdout, g.self)
		} else {
			e.groupUsage(e.stdout, g)
		}
		return flag.ErrHelp
	}
	cmd := g.find(words[1])
	if cmd == nil {
		return usagef("help: %s: unknown subcommand %q", g.name, words[1])
	}
	e.commandUsage(e.stdout, cmd)
	return flag.ErrHelp
}

// newFlagSet is a FlagSet with the global flags that prints nothing itself: runCtl
// reports errors (stderr), the help commands print help (stdout).
func (e *ctlEnv) newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are reported once, by runCtl; help by the callers
	fs.Usage = func() {}
	e.globalFlags(fs)
	return fs
}

// flagError turns a flag package error into the exit-code contract: -h is help (usage
// printed on stdout, exit 0), anything else bad usage.
func (e *ctlEnv) flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return &usageError{msg: err.Error()}
}

// commandFlags builds the FlagSet of one command: its own flags and the global ones.
func (e *ctlEnv) commandFlags(cmd *command) (*flag.FlagSet, *cmdOpts) {
	o := &cmdOpts{}
	fs := e.newFlagSet("sipedge ctl " + cmd.fullName())
	if cmd.flags != nil {
		cmd.flags(fs, o)
	}
	return fs, o
}

// commandUsage prints the help of one command: synopsis, summary, details and flags.
func (e *ctlEnv) commandUsage(w io.Writer, cmd *command) {
	fs, _ := e.commandFlags(cmd)
	fmt.Fprintf(w, "Usage: sipedge ctl %s%s\n\n%s\n", cmd.fullName(), cmd.usageArgs(), cmd.summary)
	if cmd.details != "" {
		fmt.Fprintf(w, "\n%s\n", cmd.details)
	}
	fmt.Fprintf(w, "\nFlags:\n")
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// runCommand parses one command's flags and positional arguments (in any order), checks
// them, builds the API client and runs the command.
func (e *ctlEnv) runCommand(ctx context.Context, cmd *command, args []string) error {
	err := e.parseAndRun(ctx, cmd, args)
	var ue *usageError
	if errors.As(err, &ue) && ue.help == "" {
		ue.help = "sipedge ctl " + cmd.fullName() + " --help"
	}
	return err
}

func (e *ctlEnv) parseAndRun(ctx context.Context, cmd *command, args []string) error {
	fs, o := e.commandFlags(cmd)
	pos, err := parseInterspersed(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		e.commandUsage(e.stdout, cmd)
	}
	if err != nil {
		return e.flagError(err)
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	if len(pos) != len(cmd.args) {
		what := "no arguments"
		if len(cmd.args) > 0 {
			what = strings.Join(cmd.args, " ")
		}
		return usagef("%s: want %s, got %d argument(s) (usage: sipedge ctl %s%s)",
			cmd.fullName(), what, len(pos), cmd.fullName(), cmd.usageArgs())
	}
	for i, p := range pos {
		if strings.TrimSpace(p) == "" {
			return usagef("%s: %s must not be empty", cmd.fullName(), cmd.args[i])
		}
	}
	for _, f := range cmd.required {
		if !o.set[f] {
			return usagef("%s: --%s is required", cmd.fullName(), f)
		}
	}
	if e.output != "table" && e.output != "json" {
		return usagef("-o %q: want table or json", e.output)
	}
	if e.api, err = e.client(cmd.auth); err != nil {
		return err
	}
	return cmd.run(ctx, e, o, pos)
}

// client builds the API client from --api-url and the credentials the command needs.
func (e *ctlEnv) client(auth authMode) (*apiClient, error) {
	u, err := url.Parse(strings.TrimRight(e.apiURL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usagef("--api-url %q: want http(s)://host[:port]", e.apiURL)
	}
	c := &apiClient{
		base:       u,
		authID:     e.getenv("SIPEDGE_AUTH_ID"),
		authToken:  e.getenv("SIPEDGE_AUTH_TOKEN"),
		adminToken: e.getenv("SIPEDGE_ADMIN_TOKEN"),
		timeout:    30 * time.Second,
	}
	switch auth {
	case authModeAccount:
		if c.authID == "" || c.authToken == "" {
			return nil, usagef("set SIPEDGE_AUTH_ID and SIPEDGE_AUTH_TOKEN to the account's credentials")
		}
	case authModeAdmin:
		if c.adminToken == "" {
			return nil, usagef("set SIPEDGE_ADMIN_TOKEN to the admin token (the ban list is global: only the operator sees it)")
		}
	case authModeAnyAccount:
		if (c.authID == "" || c.authToken == "") && c.adminToken == "" {
			return nil, usagef("set SIPEDGE_AUTH_ID and SIPEDGE_AUTH_TOKEN (or SIPEDGE_ADMIN_TOKEN)")
		}
	}
	return c, nil
}

// parseInterspersed parses flags anywhere among the positional arguments
// (`update ID --name N` and `update --name N ID`); "--" ends the flags.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		consumed := len(args) - len(rest)
		if consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			return pos, nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// usage prints the overview of every command.
func (e *ctlEnv) usage(w io.Writer) {
	fmt.Fprint(w, `Usage: sipedge ctl [-o table|json] [--api-url URL] COMMAND SUBCOMMAND [ARGS] [FLAGS]

Operate sipedge through its control API.

Commands:
`)
	for _, g := range ctlGroups() {
		if g.self != nil {
			fmt.Fprintf(w, "  %s\n      %s\n", g.name+g.self.usageArgs(), g.self.summary)
		}
		for _, c := range g.cmds {
			fmt.Fprintf(w, "  %s\n      %s\n", g.name+" "+c.name+c.usageArgs(), c.summary)
		}
	}
	fmt.Fprint(w, `
Global flags (before or after the command):
  -o, --output table|json  table (default): aligned columns for people; json: the API's JSON
                           answer unchanged (lists: every page's objects in one answer)
  --api-url URL            the control API (default $SIPEDGE_API_URL, else `+defaultAPIURL+`)

Environment:
  SIPEDGE_API_URL      the control API base URL
  SIPEDGE_AUTH_ID      the account's auth_id (HTTP basic auth user)
  SIPEDGE_AUTH_TOKEN   the account's auth_token
  SIPEDGE_ADMIN_TOKEN  the admin bearer token (bans only)

Exit status: 0 success, 1 the API refused (its error on stderr) or is unreachable, 2 bad usage.
Run 'sipedge ctl COMMAND --help' or 'sipedge ctl COMMAND SUBCOMMAND --help' for details.
`)
}

// groupUsage prints the subcommands of one command.
func (e *ctlEnv) groupUsage(w io.Writer, g *group) {
	fmt.Fprintf(w, "Usage: sipedge ctl %s SUBCOMMAND [ARGS] [FLAGS]\n\n%s\n\nSubcommands:\n", g.name, g.summary)
	for _, c := range g.cmds {
		fmt.Fprintf(w, "  %s\n      %s\n", c.name+c.usageArgs(), c.summary)
	}
	fmt.Fprintf(w, "\nRun 'sipedge ctl %s SUBCOMMAND --help' for its flags.\n", g.name)
}
