package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// group is one noun of ctl (acl, entry, credential, …) with its subcommands.
type group struct {
	name    string
	summary string
	cmds    []*command
	self    *command // the group is itself the command (explain)
}

// command is one `sipedge ctl GROUP NAME ARGS… [FLAGS]`.
type command struct {
	group, name string
	args        []string // positional arguments, in order (all required)
	summary     string
	details     string   // more help, shown by --help
	required    []string // flags that must be given
	auth        authMode
	flags       func(fs *flag.FlagSet, o *cmdOpts)
	run         func(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error
}

// fullName is "group name" ("explain" for a group that is itself the command).
func (c *command) fullName() string {
	if c.name == "" {
		return c.group
	}
	return c.group + " " + c.name
}

// usageArgs is the synopsis after the command words: positional arguments, required
// flags with their value names, and "[flags]" when there are optional ones.
func (c *command) usageArgs() string {
	var b strings.Builder
	for _, a := range c.args {
		b.WriteString(" " + a)
	}
	if c.flags == nil {
		return b.String()
	}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.flags(fs, &cmdOpts{})
	for _, r := range c.required {
		b.WriteString(" --" + r)
		if f := fs.Lookup(r); f != nil {
			if name, _ := flag.UnquoteUsage(f); name != "" {
				b.WriteString(" " + strings.ToUpper(name))
			}
		}
	}
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n > len(c.required) {
		b.WriteString(" [flags]")
	}
	return b.String()
}

// cmdOpts holds the flag values of one command; set names the flags given.
type cmdOpts struct {
	name, username, description     string
	acl, credential, domain         string
	upstream, status, direction     string
	algorithms, trunk, source, user string
	ips                             stringList
	passwordStdin, disabled         bool
	maxCPS, maxConcurrent           int
	set                             map[string]bool
}

// stringList is a repeatable flag; each value may also hold a comma-separated list.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ",") }

func (l *stringList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

func findGroup(name string) *group {
	for _, g := range ctlGroups() {
		if g.name == name {
			return g
		}
	}
	return nil
}

func (g *group) find(name string) *command {
	for _, c := range g.cmds {
		if c.name == name {
			return c
		}
	}
	return nil
}

func (g *group) subNames() []string {
	var out []string
	for _, c := range g.cmds {
		out = append(out, c.name)
	}
	return out
}

// ctlGroups is the command table: help, dispatch and completion all read it.
func ctlGroups() []*group {
	gs := []*group{
		{name: "acl", summary: "IP access control lists: the addresses a trunk accepts calls from.", cmds: []*command{
			{name: "list", summary: "list the IP access control lists", auth: authModeAccount, run: aclList},
			{name: "get", args: []string{"ID"}, summary: "show one IP access control list and its entries", auth: authModeAccount, run: aclGet},
			{name: "create", summary: "create an IP access control list", required: []string{"name", "ip"}, auth: authModeAccount,
				details: "--ip takes an IPv4/IPv6 address or CIDR block; repeat it (or separate with commas) for more.",
				flags:   func(fs *flag.FlagSet, o *cmdOpts) { nameFlag(fs, o, "the list's `NAME`"); ipFlag(fs, o) }, run: aclCreate},
			{name: "update", args: []string{"ID"}, summary: "rename an IP access control list and/or replace its addresses", auth: authModeAccount,
				details: "--ip replaces the whole address list (entries whose address stays keep their id and state).",
				flags:   func(fs *flag.FlagSet, o *cmdOpts) { nameFlag(fs, o, "the new `NAME`"); ipFlag(fs, o) }, run: aclUpdate},
			{name: "delete", args: []string{"ID"}, summary: "delete an IP access control list (refused while a trunk uses it)", auth: authModeAccount, run: aclDelete},
		}},
		{name: "entry", summary: "Entries of an IP access control list: one address or CIDR block each, enabled or not.", cmds: []*command{
			{name: "list", args: []string{"ACL"}, summary: "list the entries of an IP access control list", auth: authModeAccount, run: entryList},
			{name: "get", args: []string{"ACL", "ID"}, summary: "show one entry", auth: authModeAccount, run: entryGet},
			{name: "add", args: []string{"ACL"}, summary: "add an address or CIDR block", required: []string{"ip"}, auth: authModeAccount,
				flags: func(fs *flag.FlagSet, o *cmdOpts) {
					fs.Var(&o.ips, "ip", "the `ADDRESS` or CIDR block")
					fs.StringVar(&o.description, "description", "", "what the address is (free `TEXT`)")
					fs.BoolVar(&o.disabled, "disabled", false, "add it disabled (stored and listed, matches nothing)")
				}, run: entryAdd},
			{name: "update", args: []string{"ACL", "ID"}, summary: "change an entry's address or description", auth: authModeAccount,
				flags: func(fs *flag.FlagSet, o *cmdOpts) {
					fs.Var(&o.ips, "ip", "the new `ADDRESS` or CIDR block")
					fs.StringVar(&o.description, "description", "", "the new description, `TEXT` (\"\" clears it)")
				}, run: entryUpdate},
			{name: "enable", args: []string{"ACL", "ID"}, summary: "enable an entry", auth: authModeAccount, run: entryEnable},
			{name: "disable", args: []string{"ACL", "ID"}, summary: "disable an entry (kept and listed, matches nothing)", auth: authModeAccount, run: entryDisable},
			{name: "delete", args: []string{"ACL", "ID"}, summary: "delete an entry", auth: authModeAccount, run: entryDelete},
		}},
		{name: "credential", summary: "Digest credentials (username and password) trunks challenge callers for.", cmds: []*command{
			{name: "list", summary: "list the credentials", auth: authModeAccount, run: credentialList},
			{name: "get", args: []string{"ID"}, summary: "show one credential (never its password)", auth: authModeAccount, run: credentialGet},
			{name: "create", summary: "create a credential; the password is read from stdin", required: []string{"name", "username", "password-stdin"}, auth: authModeAccount,
				details: "The password is the first line of standard input, e.g.\n" +
					"  printf '%s\\n' \"$PW\" | sipedge ctl credential create --name N --username U --password-stdin\n" +
					"There is no password flag: flags end up in shell history and process lists.",
				flags: func(fs *flag.FlagSet, o *cmdOpts) {
					nameFlag(fs, o, "the credential's `NAME`")
					fs.StringVar(&o.username, "username", "", "the digest `USER` name (unique across all accounts)")
					passwordFlag(fs, o)
				}, run: credentialCreate},
			{name: "update", args: []string{"ID"}, summary: "rename a credential or set a new password (rotation)", auth: authModeAccount,
				details: "With --password-stdin the new password is the first line of standard input. Changing --username needs --password-stdin too.",
				flags: func(fs *flag.FlagSet, o *cmdOpts) {
					nameFlag(fs, o, "the new `NAME`")
					fs.StringVar(&o.username, "username", "", "the new digest `USER` name")
					passwordFlag(fs, o)
				}, run: credentialUpdate},
			{name: "delete", args: []string{"ID"}, summary: "delete a credential (refused while a trunk uses it)", auth: authModeAccount, run: credentialDelete},
		}},
		{name: "trunk", summary: "Trunks: a PBX's way in, judged by its IP access control list and/or credential.", cmds: []*command{
			{name: "list", summary: "list the trunks", auth: authModeAccount, run: trunkList},
			{name: "get", args: []string{"ID"}, summary: "show one trunk", auth: authModeAccount, run: trunkGet},
			{name: "create", summary: "create a trunk", required: []string{"name"}, auth: authModeAccount,
				flags: trunkFlags, run: trunkCreate},
			{name: "update", args: []string{"ID"}, summary: "change a trunk (only the flags given)", auth: authModeAccount,
				details: "--acl \"\" or --credential \"\" detaches it, --upstream \"\" resets the upstream,\n" +
					"--domain \"\" restores the default domain, --digest-algorithms \"\" the default algorithms.",
				flags: trunkFlags, run: trunkUpdate},
			{name: "delete", args: []string{"ID"}, summary: "delete a trunk", auth: authModeAccount, run: trunkDelete},
		}},
		{name: "explain", summary: "Explain the verdict an INVITE would get, without sending SIP.", self: &command{
			summary:  "explain the verdict an INVITE from --source to --trunk would get, without sending SIP",
			required: []string{"trunk", "source"}, auth: authModeAccount,
			details: "Answers from the policy the node's SIP path serves: allow_ip, challenge (407: digest\n" +
				"required), no_credential or trunk_disabled (403), or none (the INVITE cannot reach the trunk).",
			flags: func(fs *flag.FlagSet, o *cmdOpts) {
				fs.StringVar(&o.trunk, "trunk", "", "trunk `ID`")
				fs.StringVar(&o.source, "source", "", "the source `IP` the INVITE would come from")
				fs.StringVar(&o.user, "username", "", "also say whether a digest answer as `USER` would pass")
			},
			run: explainRun,
		}},
		{name: "bans", summary: "Bans of the brute-force and scanner defence (admin token: SIPEDGE_ADMIN_TOKEN).", cmds: []*command{
			{name: "list", summary: "list the bans in force", auth: authModeAdmin, run: bansList},
			{name: "get", args: []string{"IP"}, summary: "show the ban of one source", auth: authModeAdmin, run: bansGet},
			{name: "lift", args: []string{"IP"}, summary: "lift a ban on every node", auth: authModeAdmin, run: bansLift},
		}},
		{name: "cluster", summary: "The edge nodes and the data-set version each serves.", cmds: []*command{
			{name: "status", summary: "list the live nodes and their applied versions", auth: authModeAnyAccount, run: clusterStatus},
			{name: "version", args: []string{"VERSION"}, summary: "how many live nodes serve a data-set version", auth: authModeAnyAccount, run: clusterVersion},
		}},
		{name: "completion", summary: "Shell completion: add `source <(sipedge ctl completion bash)` (or zsh) to the shell's rc file.", cmds: []*command{
			{name: "bash", summary: "print the bash completion script", run: completionBash},
			{name: "zsh", summary: "print the zsh completion script", run: completionZsh},
		}},
	}
	for _, g := range gs {
		for _, c := range g.cmds {
			c.group = g.name
		}
		if g.self != nil {
			g.self.group = g.name
		}
	}
	return gs
}

func nameFlag(fs *flag.FlagSet, o *cmdOpts, usage string) {
	fs.StringVar(&o.name, "name", "", usage)
}

func ipFlag(fs *flag.FlagSet, o *cmdOpts) {
	fs.Var(&o.ips, "ip", "an `ADDRESS` or CIDR block (repeatable)")
}

func passwordFlag(fs *flag.FlagSet, o *cmdOpts) {
	fs.BoolVar(&o.passwordStdin, "password-stdin", false, "read the password from the first line of standard input")
}

func trunkFlags(fs *flag.FlagSet, o *cmdOpts) {
	nameFlag(fs, o, "the trunk's `NAME`")
	fs.StringVar(&o.acl, "acl", "", "IP access control list `ID` (ipacl_uuid)")
	fs.StringVar(&o.credential, "credential", "", "credential `ID` (credential_uuid)")
	fs.StringVar(&o.domain, "domain", "", "trunk `DOMAIN` (default <trunk_id>.<sip domain>)")
	fs.StringVar(&o.upstream, "upstream", "", "upstream `URI`, sip:host[:port] (default the edge's)")
	fs.StringVar(&o.status, "status", "", "`enabled|disabled`")
	fs.StringVar(&o.direction, "direction", "", "`outbound|inbound` (outbound: PBX → edge → upstream)")
	fs.StringVar(&o.algorithms, "digest-algorithms", "", "digest `ALGORITHMS` to challenge with, in order, e.g. SHA-256,MD5")
	fs.IntVar(&o.maxCPS, "max-cps", 0, "at most `N` new calls per second, 0 unlimited")
	fs.IntVar(&o.maxConcurrent, "max-concurrent", 0, "at most `N` concurrent calls, 0 unlimited")
}

// ---- output helpers

// width is the width tables are fitted into: $COLUMNS when it is wider than 80.
func (e *ctlEnv) width() int {
	if n, err := strconv.Atoi(e.getenv("COLUMNS")); err == nil && n > defaultWidth {
		return n
	}
	return defaultWidth
}

func (e *ctlEnv) json() bool { return e.output == "json" }

// printRaw writes an API answer as it came (JSON output).
func (e *ctlEnv) printRaw(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if _, err := e.stdout.Write(b); err != nil {
		return err
	}
	if b[len(b)-1] != '\n' {
		_, err := io.WriteString(e.stdout, "\n")
		return err
	}
	return nil
}

// printWrite reports a successful write: the API's JSON, or its message and id, with
// its warnings on stderr.
func (e *ctlEnv) printWrite(res *apiResponse, idField string) error {
	if e.json() {
		return e.printRaw(res.body)
	}
	var a map[string]any
	_ = json.Unmarshal(res.body, &a)
	msg, _ := a["message"].(string)
	id, _ := a[idField].(string)
	if msg == "" {
		msg = "done"
	}
	line := clean(msg)
	if id != "" {
		line += ": " + clean(id)
	}
	if p, _ := a["propagation"].(string); p != "" {
		line += " (propagation " + clean(p) + ")"
	}
	fmt.Fprintln(e.stdout, line)
	if ws, ok := a["warnings"].([]any); ok {
		for _, w := range ws {
			fmt.Fprintf(e.stderr, "warning: %s\n", clean(fmt.Sprint(w)))
		}
	}
	return nil
}

// printDeleted reports a delete (204 has no body: JSON output prints nothing).
func (e *ctlEnv) printDeleted(res *apiResponse, what string) error {
	if e.json() {
		return e.printRaw(res.body)
	}
	fmt.Fprintf(e.stdout, "%s deleted\n", clean(what))
	return nil
}

// get fetches one object: printed raw (JSON) or decoded into v for a table.
func (e *ctlEnv) get(ctx context.Context, auth authMode, path string, v any) (printed bool, err error) {
	res, err := e.api.do(ctx, auth, http.MethodGet, path, nil, nil)
	if err != nil {
		return false, err
	}
	if e.json() {
		return true, e.printRaw(res.body)
	}
	if err := json.Unmarshal(res.body, v); err != nil {
		return false, fmt.Errorf("GET %s: unexpected answer: %v", path, err)
	}
	return false, nil
}

// list fetches every page of a list: printed raw (JSON) or decoded into out for a table.
func list[T any](ctx context.Context, e *ctlEnv, auth authMode, path string) (objs []T, printed bool, err error) {
	raw, body, err := e.api.listAll(ctx, auth, path)
	if err != nil {
		return nil, false, err
	}
	if e.json() {
		return nil, true, e.printRaw(body)
	}
	objs = make([]T, len(raw))
	for i, r := range raw {
		if err := json.Unmarshal(r, &objs[i]); err != nil {
			return nil, false, fmt.Errorf("GET %s: unexpected object: %v", path, err)
		}
	}
	return objs, false, nil
}

// str shows a nullable string.
func str(p *string) string {
	if p == nil {
		return "-"
	}
	return orDash(*p)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// ---- IP access control lists

type aclObject struct {
	IPACLUUID   string        `json:"ipacl_uuid"`
	Name        string        `json:"name"`
	IPAddresses []string      `json:"ip_addresses"`
	Entries     []entryObject `json:"entries"`
	CreatedAt   string        `json:"created_at"`
	UpdatedAt   string        `json:"updated_at"`
}

type entryObject struct {
	ID            string  `json:"id"`
	IPAddress     string  `json:"ip_address"`
	Description   string  `json:"description"`
	Enabled       bool    `json:"enabled"`
	HitCount      uint64  `json:"hit_count"`
	LastMatchedAt *string `json:"last_matched_at"`
	CreatedAt     string  `json:"created_at"`
	UpdatedAt     string  `json:"updated_at"`
}

func aclList(ctx context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	acls, printed, err := list[aclObject](ctx, e, authModeAccount, e.api.accountPath("IPAccessControlList"))
	if err != nil || printed {
		return err
	}
	rows := make([][]string, 0, len(acls))
	for _, a := range acls {
		rows = append(rows, []string{a.IPACLUUID, a.Name, strconv.Itoa(len(a.IPAddresses)), orDash(strings.Join(a.IPAddresses, ", "))})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "IPACL_UUID"}, {name: "NAME", min: 10, shrink: 1}, {name: "N"}, {name: "IP_ADDRESSES", min: 15, items: true},
	}, rows)
}

func aclGet(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var a aclObject
	if printed, err := e.get(ctx, authModeAccount, e.api.accountPath("IPAccessControlList", pos[0]), &a); err != nil || printed {
		return err
	}
	if err := writeFields(e.stdout, e.width(), []field{
		{"ipacl_uuid", a.IPACLUUID}, {"name", a.Name}, {"ip_addresses", strings.Join(a.IPAddresses, ", ")},
		{"created_at", a.CreatedAt}, {"updated_at", a.UpdatedAt},
	}); err != nil {
		return err
	}
	if len(a.Entries) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	return e.entryTable(a.Entries)
}

func aclCreate(ctx context.Context, e *ctlEnv, o *cmdOpts, _ []string) error {
	body := map[string]any{"name": o.name, "ip_addresses": []string(o.ips)}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("IPAccessControlList"), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "ipacl_uuid")
}

func aclUpdate(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error {
	body := map[string]any{}
	if o.set["name"] {
		body["name"] = o.name
	}
	if o.set["ip"] {
		body["ip_addresses"] = []string(o.ips)
	}
	if len(body) == 0 {
		return usagef("acl update: nothing to change: give --name and/or --ip")
	}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("IPAccessControlList", pos[0]), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "ipacl_uuid")
}

func aclDelete(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodDelete, e.api.accountPath("IPAccessControlList", pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return e.printDeleted(res, "IP access control list "+pos[0])
}

// ---- entries

func (e *ctlEnv) entryTable(es []entryObject) error {
	rows := make([][]string, 0, len(es))
	for _, x := range es {
		rows = append(rows, []string{x.ID, x.IPAddress, yesNo(x.Enabled), strconv.FormatUint(x.HitCount, 10), orDash(x.Description)})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "ID"}, {name: "IP_ADDRESS", min: 15, shrink: 1}, {name: "ENABLED"}, {name: "HITS"}, {name: "DESCRIPTION", min: 8},
	}, rows)
}

func entryList(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	es, printed, err := list[entryObject](ctx, e, authModeAccount, e.api.accountPath("IPAccessControlList", pos[0], "Entry"))
	if err != nil || printed {
		return err
	}
	return e.entryTable(es)
}

func entryGet(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var x entryObject
	if printed, err := e.get(ctx, authModeAccount, e.api.accountPath("IPAccessControlList", pos[0], "Entry", pos[1]), &x); err != nil || printed {
		return err
	}
	return writeFields(e.stdout, e.width(), []field{
		{"id", x.ID}, {"ip_address", x.IPAddress}, {"description", x.Description}, {"enabled", yesNo(x.Enabled)},
		{"hit_count", strconv.FormatUint(x.HitCount, 10)}, {"last_matched_at", str(x.LastMatchedAt)},
		{"created_at", x.CreatedAt}, {"updated_at", x.UpdatedAt},
	})
}

func entryAdd(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error {
	if len(o.ips) != 1 {
		return usagef("entry add: --ip takes exactly one address or CIDR block (got %d)", len(o.ips))
	}
	body := map[string]any{"ip_address": o.ips[0]}
	if o.set["description"] {
		body["description"] = o.description
	}
	if o.disabled {
		body["enabled"] = false
	}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("IPAccessControlList", pos[0], "Entry"), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "id")
}

func entryUpdate(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error {
	body := map[string]any{}
	if o.set["ip"] {
		if len(o.ips) != 1 {
			return usagef("entry update: --ip takes exactly one address or CIDR block (got %d)", len(o.ips))
		}
		body["ip_address"] = o.ips[0]
	}
	if o.set["description"] {
		body["description"] = o.description
	}
	if len(body) == 0 {
		return usagef("entry update: nothing to change: give --ip and/or --description")
	}
	return e.entryWrite(ctx, pos, body)
}

func entryEnable(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	return e.entryWrite(ctx, pos, map[string]any{"enabled": true})
}

func entryDisable(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	return e.entryWrite(ctx, pos, map[string]any{"enabled": false})
}

func (e *ctlEnv) entryWrite(ctx context.Context, pos []string, body map[string]any) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("IPAccessControlList", pos[0], "Entry", pos[1]), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "id")
}

func entryDelete(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodDelete, e.api.accountPath("IPAccessControlList", pos[0], "Entry", pos[1]), nil, nil)
	if err != nil {
		return err
	}
	return e.printDeleted(res, "entry "+pos[1])
}

// ---- credentials

type credentialObject struct {
	CredentialUUID string `json:"credential_uuid"`
	Name           string `json:"name"`
	Username       string `json:"username"`
	Realm          string `json:"realm"`
	CreatedAt      string `json:"created_at"`
	UpdatedAt      string `json:"updated_at"`
}

// maxPassword bounds what is read from stdin for a password (the API takes ≤ 128).
const maxPassword = 4096

// readPassword reads the password: the first line of stdin, without its line ending.
// It is never printed, logged or put in an error message. When stdin is a terminal it
// prompts on stderr and turns the terminal's echo off while the password is typed.
func (e *ctlEnv) readPassword() (string, error) {
	if e.stdin == nil {
		return "", usagef("--password-stdin: no standard input")
	}
	if f, ok := e.stdin.(*os.File); ok {
		if restore, ok := echoOff(f); ok {
			fmt.Fprint(e.stderr, "Password: ")
			defer func() {
				restore()
				fmt.Fprintln(e.stderr)
			}()
		}
	}
	line, err := bufio.NewReaderSize(io.LimitReader(e.stdin, maxPassword), maxPassword).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("--password-stdin: reading standard input: %v", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", usagef("--password-stdin: standard input holds no password (give it as the first line)")
	}
	return pw, nil
}

func credentialList(ctx context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	cs, printed, err := list[credentialObject](ctx, e, authModeAccount, e.api.accountPath("Credential"))
	if err != nil || printed {
		return err
	}
	rows := make([][]string, 0, len(cs))
	for _, c := range cs {
		rows = append(rows, []string{c.CredentialUUID, c.Name, c.Username})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "CREDENTIAL_UUID"}, {name: "NAME", min: 10}, {name: "USERNAME", min: 12, shrink: 1},
	}, rows)
}

func credentialGet(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var c credentialObject
	if printed, err := e.get(ctx, authModeAccount, e.api.accountPath("Credential", pos[0]), &c); err != nil || printed {
		return err
	}
	return writeFields(e.stdout, e.width(), []field{
		{"credential_uuid", c.CredentialUUID}, {"name", c.Name}, {"username", c.Username}, {"realm", c.Realm},
		{"created_at", c.CreatedAt}, {"updated_at", c.UpdatedAt},
	})
}

func credentialCreate(ctx context.Context, e *ctlEnv, o *cmdOpts, _ []string) error {
	pw, err := e.readPassword()
	if err != nil {
		return err
	}
	body := map[string]any{"name": o.name, "username": o.username, "password": pw}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("Credential"), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "credential_uuid")
}

func credentialUpdate(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error {
	body := map[string]any{}
	if o.set["name"] {
		body["name"] = o.name
	}
	if o.set["username"] {
		body["username"] = o.username
	}
	if o.passwordStdin {
		pw, err := e.readPassword()
		if err != nil {
			return err
		}
		body["password"] = pw
	}
	if len(body) == 0 {
		return usagef("credential update: nothing to change: give --name, --username and/or --password-stdin")
	}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("Credential", pos[0]), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "credential_uuid")
}

func credentialDelete(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodDelete, e.api.accountPath("Credential", pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return e.printDeleted(res, "credential "+pos[0])
}

// ---- trunks

type trunkObject struct {
	TrunkID          string   `json:"trunk_id"`
	Name             string   `json:"name"`
	TrunkDirection   string   `json:"trunk_direction"`
	TrunkStatus      string   `json:"trunk_status"`
	TrunkDomain      string   `json:"trunk_domain"`
	IPACLUUID        *string  `json:"ipacl_uuid"`
	CredentialUUID   *string  `json:"credential_uuid"`
	UpstreamURI      *string  `json:"upstream_uri"`
	DigestAlgorithms []string `json:"digest_algorithms"`
	MaxCPS           int      `json:"max_cps"`
	MaxConcurrent    int      `json:"max_concurrent"`
	CreatedAt        string   `json:"created_at"`
	UpdatedAt        string   `json:"updated_at"`
}

// trunkBody is the request body of the trunk flags given (update sends only those).
func trunkBody(o *cmdOpts) map[string]any {
	body := map[string]any{}
	for flagName, field := range map[string]struct {
		key string
		val string
	}{
		"name": {"name", o.name}, "acl": {"ipacl_uuid", o.acl}, "credential": {"credential_uuid", o.credential},
		"domain": {"trunk_domain", o.domain}, "upstream": {"upstream_uri", o.upstream},
		"status": {"trunk_status", o.status}, "direction": {"trunk_direction", o.direction},
	} {
		if o.set[flagName] {
			body[field.key] = field.val
		}
	}
	if o.set["digest-algorithms"] {
		algs := []string{}
		for _, a := range strings.Split(o.algorithms, ",") {
			if a = strings.TrimSpace(a); a != "" {
				algs = append(algs, a)
			}
		}
		body["digest_algorithms"] = algs
	}
	if o.set["max-cps"] {
		body["max_cps"] = o.maxCPS
	}
	if o.set["max-concurrent"] {
		body["max_concurrent"] = o.maxConcurrent
	}
	return body
}

func trunkList(ctx context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	ts, printed, err := list[trunkObject](ctx, e, authModeAccount, e.api.accountPath("Trunk"))
	if err != nil || printed {
		return err
	}
	rows := make([][]string, 0, len(ts))
	for _, t := range ts {
		rows = append(rows, []string{t.TrunkID, t.Name, t.TrunkStatus, t.TrunkDomain})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "TRUNK_ID"}, {name: "NAME", min: 10, shrink: 1}, {name: "STATUS"}, {name: "DOMAIN", min: 16, tail: true},
	}, rows)
}

func trunkGet(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var t trunkObject
	if printed, err := e.get(ctx, authModeAccount, e.api.accountPath("Trunk", pos[0]), &t); err != nil || printed {
		return err
	}
	algs := "- (the edge's default)"
	if len(t.DigestAlgorithms) > 0 {
		algs = strings.Join(t.DigestAlgorithms, ", ")
	}
	limit := func(n int) string {
		if n == 0 {
			return "unlimited"
		}
		return strconv.Itoa(n)
	}
	up := str(t.UpstreamURI)
	if t.UpstreamURI == nil {
		up = "- (the edge's default)"
	}
	return writeFields(e.stdout, e.width(), []field{
		{"trunk_id", t.TrunkID}, {"name", t.Name}, {"trunk_direction", t.TrunkDirection}, {"trunk_status", t.TrunkStatus},
		{"trunk_domain", t.TrunkDomain}, {"ipacl_uuid", str(t.IPACLUUID)}, {"credential_uuid", str(t.CredentialUUID)},
		{"upstream_uri", up}, {"digest_algorithms", algs}, {"max_cps", limit(t.MaxCPS)}, {"max_concurrent", limit(t.MaxConcurrent)},
		{"created_at", t.CreatedAt}, {"updated_at", t.UpdatedAt},
	})
}

func trunkCreate(ctx context.Context, e *ctlEnv, o *cmdOpts, _ []string) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("Trunk"), nil, trunkBody(o))
	if err != nil {
		return err
	}
	return e.printWrite(res, "trunk_id")
}

func trunkUpdate(ctx context.Context, e *ctlEnv, o *cmdOpts, pos []string) error {
	body := trunkBody(o)
	if len(body) == 0 {
		return usagef("trunk update: nothing to change: give at least one of --name, --acl, --credential, --domain, --upstream, --status, --direction, --digest-algorithms, --max-cps, --max-concurrent")
	}
	res, err := e.api.do(ctx, authModeAccount, http.MethodPost, e.api.accountPath("Trunk", pos[0]), nil, body)
	if err != nil {
		return err
	}
	return e.printWrite(res, "trunk_id")
}

func trunkDelete(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	res, err := e.api.do(ctx, authModeAccount, http.MethodDelete, e.api.accountPath("Trunk", pos[0]), nil, nil)
	if err != nil {
		return err
	}
	return e.printDeleted(res, "trunk "+pos[0])
}

// ---- explain

type explainObject struct {
	TrunkID      string `json:"trunk_id"`
	SourceIP     string `json:"source_ip"`
	Verdict      string `json:"verdict"`
	SIPResponse  string `json:"sip_response"`
	Reason       string `json:"reason"`
	MatchedEntry *struct {
		IPACLUUID string `json:"ipacl_uuid"`
		ID        string `json:"id"`
		IPAddress string `json:"ip_address"`
	} `json:"matched_entry"`
	DigestRequired     bool     `json:"digest_required"`
	CredentialUsername *string  `json:"credential_username"`
	Username           *string  `json:"username"`
	UsernameMatches    *bool    `json:"username_matches"`
	SourceTrunks       []string `json:"source_trunks"`
	SnapshotVersion    uint64   `json:"snapshot_version"`
}

// explainCatchUp is how long explain waits for the node's snapshot to catch up with a
// write made just before (`trunk create` or `entry disable`, then `explain`): the API
// explains from the snapshot the node's SIP path serves, which applies writes a moment
// later (verdict "none" for a trunk it does not hold yet). While the answer's
// snapshot_version is older than the data set's version, explain asks again.
const explainCatchUp = 5 * time.Second

func explainRun(ctx context.Context, e *ctlEnv, o *cmdOpts, _ []string) error {
	body := map[string]any{"source_ip": o.source}
	if o.set["username"] {
		body["username"] = o.user
	}
	path := e.api.accountPath("Trunk", o.trunk, "Explain")
	deadline := time.Now().Add(explainCatchUp)
	for {
		res, err := e.api.do(ctx, authModeAccount, http.MethodPost, path, nil, body)
		if err != nil {
			return err
		}
		var x explainObject
		if err := json.Unmarshal(res.body, &x); err != nil {
			return fmt.Errorf("explain: unexpected answer: %v", err)
		}
		if time.Now().Before(deadline) && e.behind(ctx, x.SnapshotVersion) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if e.json() {
			return e.printRaw(res.body)
		}
		return e.explainTable(&x)
	}
}

// behind reports whether the data set holds a version newer than v (so this node's
// snapshot has a write to catch up with). Without a cluster view it says no.
func (e *ctlEnv) behind(ctx context.Context, v uint64) bool {
	res, err := e.api.do(ctx, authModeAnyAccount, http.MethodGet, clusterAPIPath, nil, nil)
	if err != nil {
		return false
	}
	var c struct {
		DataVersion uint64 `json:"data_version"`
	}
	return json.Unmarshal(res.body, &c) == nil && c.DataVersion > v
}

func (e *ctlEnv) explainTable(x *explainObject) error {
	matched := "-"
	if m := x.MatchedEntry; m != nil {
		matched = fmt.Sprintf("%s (entry %s of IP ACL %s)", m.IPAddress, m.ID, m.IPACLUUID)
	}
	fs := []field{
		{"trunk_id", x.TrunkID}, {"source_ip", x.SourceIP}, {"verdict", x.Verdict}, {"sip_response", x.SIPResponse},
		{"reason", x.Reason}, {"matched_entry", matched}, {"digest_required", yesNo(x.DigestRequired)},
		{"credential", str(x.CredentialUsername)},
	}
	if x.Username != nil {
		fs = append(fs, field{"username", *x.Username})
		if x.UsernameMatches != nil {
			fs = append(fs, field{"username_matches", yesNo(*x.UsernameMatches)})
		}
	}
	fs = append(fs, field{"source_trunks", orDash(strings.Join(x.SourceTrunks, ", "))},
		field{"snapshot_version", strconv.FormatUint(x.SnapshotVersion, 10)})
	return writeFields(e.stdout, e.width(), fs)
}

// ---- bans (admin API)

const banAPIPath = "/v1/Admin/Ban/"

type banObject struct {
	IP       string  `json:"ip"`
	Reason   string  `json:"reason"`
	Failures int     `json:"failures"`
	Since    string  `json:"since"`
	Until    string  `json:"until"`
	Node     *string `json:"node"`
}

func bansList(ctx context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	bs, printed, err := list[banObject](ctx, e, authModeAdmin, banAPIPath)
	if err != nil || printed {
		return err
	}
	rows := make([][]string, 0, len(bs))
	for _, b := range bs {
		rows = append(rows, []string{b.IP, b.Reason, strconv.Itoa(b.Failures), b.Until, str(b.Node)})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "IP"}, {name: "REASON", min: 10}, {name: "FAILURES"}, {name: "UNTIL"}, {name: "NODE", min: 8, shrink: 1},
	}, rows)
}

func bansGet(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var b banObject
	if printed, err := e.get(ctx, authModeAdmin, banAPIPath+url.PathEscape(pos[0])+"/", &b); err != nil || printed {
		return err
	}
	return writeFields(e.stdout, e.width(), []field{
		{"ip", b.IP}, {"reason", b.Reason}, {"failures", strconv.Itoa(b.Failures)},
		{"since", b.Since}, {"until", b.Until}, {"node", str(b.Node)},
	})
}

func bansLift(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	res, err := e.api.do(ctx, authModeAdmin, http.MethodDelete, banAPIPath+url.PathEscape(pos[0])+"/", nil, nil)
	if err != nil {
		return err
	}
	if e.json() {
		return e.printRaw(res.body)
	}
	fmt.Fprintf(e.stdout, "ban on %s lifted\n", clean(pos[0]))
	return nil
}

// ---- cluster

const clusterAPIPath = "/v1/Cluster/"

type nodeObject struct {
	NodeID         string  `json:"node_id"`
	AppliedVersion uint64  `json:"applied_version"`
	AppliedAt      *string `json:"applied_at"`
	Address        string  `json:"address"`
}

func (e *ctlEnv) nodeTable(ns []nodeObject) error {
	rows := make([][]string, 0, len(ns))
	for _, n := range ns {
		rows = append(rows, []string{n.NodeID, strconv.FormatUint(n.AppliedVersion, 10), str(n.AppliedAt), orDash(n.Address)})
	}
	return writeTable(e.stdout, e.width(), []column{
		{name: "NODE_ID", min: 12, shrink: 1}, {name: "VERSION"}, {name: "APPLIED_AT"}, {name: "ADDRESS", min: 15},
	}, rows)
}

func clusterStatus(ctx context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	var c struct {
		DataVersion uint64       `json:"data_version"`
		DataEpoch   *string      `json:"data_epoch"`
		LiveNodes   int          `json:"live_nodes"`
		Nodes       []nodeObject `json:"nodes"`
	}
	if printed, err := e.get(ctx, authModeAnyAccount, clusterAPIPath, &c); err != nil || printed {
		return err
	}
	if err := writeFields(e.stdout, e.width(), []field{
		{"data_version", strconv.FormatUint(c.DataVersion, 10)}, {"data_epoch", str(c.DataEpoch)},
		{"live_nodes", strconv.Itoa(c.LiveNodes)},
	}); err != nil {
		return err
	}
	if len(c.Nodes) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout)
	return e.nodeTable(c.Nodes)
}

func clusterVersion(ctx context.Context, e *ctlEnv, _ *cmdOpts, pos []string) error {
	var c struct {
		Version     uint64       `json:"version"`
		DataVersion uint64       `json:"data_version"`
		ServedBy    int          `json:"served_by"`
		LiveNodes   int          `json:"live_nodes"`
		Message     string       `json:"message"`
		NodesBehind []nodeObject `json:"nodes_behind"`
	}
	if printed, err := e.get(ctx, authModeAnyAccount, clusterAPIPath+"Version/"+url.PathEscape(pos[0])+"/", &c); err != nil || printed {
		return err
	}
	if err := writeFields(e.stdout, e.width(), []field{
		{"version", strconv.FormatUint(c.Version, 10)}, {"data_version", strconv.FormatUint(c.DataVersion, 10)},
		{"served_by", fmt.Sprintf("%d of %d live nodes", c.ServedBy, c.LiveNodes)}, {"message", c.Message},
	}); err != nil {
		return err
	}
	if len(c.NodesBehind) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout, "\nnodes behind:")
	return e.nodeTable(c.NodesBehind)
}
