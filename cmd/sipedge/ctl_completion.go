package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Shell completion for `sipedge ctl`, generated from the command table (ctlGroups), so it
// knows exactly the commands and flags ctl has. It completes command words, flag names
// and the values of -o, --status and --direction; ids are left to the shell's default.

func completionBash(_ context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	_, err := io.WriteString(e.stdout, "# bash completion for sipedge ctl. Load it with:\n"+
		"#   source <(sipedge ctl completion bash)\n"+
		"# or save it as /etc/bash_completion.d/sipedge.\n"+
		bashCompletion())
	return err
}

func completionZsh(_ context.Context, e *ctlEnv, _ *cmdOpts, _ []string) error {
	_, err := io.WriteString(e.stdout, "# zsh completion for sipedge ctl. Load it from ~/.zshrc with:\n"+
		"#   source <(sipedge ctl completion zsh)\n"+
		"# It runs the bash completion through zsh's bashcompinit.\n"+
		"(( $+functions[compdef] )) || { autoload -Uz compinit && compinit; }\n"+
		"autoload -U +X bashcompinit && bashcompinit\n"+
		bashCompletion())
	return err
}

// bashCompletion is the completion function and its registration; it also runs under
// zsh's bashcompinit (ksharrays makes its arrays 0-based there, as in bash).
func bashCompletion() string {
	global := flag.NewFlagSet("", flag.ContinueOnError)
	(&ctlEnv{}).globalFlags(global)
	globalNames, valueFlags := flagWords(global)
	values := map[string]bool{}
	for _, f := range valueFlags {
		values[f] = true
	}

	var groups []string
	cases := map[string]string{}
	for _, g := range ctlGroups() {
		groups = append(groups, g.name)
		if g.self != nil {
			names, vf := commandFlagWords(g.self)
			cases[g.name+"/*"] = strings.Join(names, " ")
			for _, f := range vf {
				values[f] = true
			}
			continue
		}
		cases[g.name+"/"] = strings.Join(g.subNames(), " ")
		for _, c := range g.cmds {
			names, vf := commandFlagWords(c)
			cases[g.name+"/"+c.name] = strings.Join(names, " ")
			for _, f := range vf {
				values[f] = true
			}
		}
	}
	cases["/"] = strings.Join(groups, " ") + " help"
	cases["help/"] = strings.Join(groups, " ")

	var valueList []string
	for f := range values {
		valueList = append(valueList, f)
	}
	sort.Strings(valueList)
	var keys []string
	for k := range cases {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	var b strings.Builder
	b.WriteString(`_sipedge() {
	[ -n "${ZSH_VERSION:-}" ] && setopt localoptions ksharrays
	local cur prev w i group="" sub="" skip=0 words=""
	cur=${COMP_WORDS[COMP_CWORD]}
	prev=${COMP_WORDS[COMP_CWORD-1]}
	COMPREPLY=()
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "ctl" -- "$cur"))
		return 0
	fi
	[ "${COMP_WORDS[1]}" = ctl ] || return 0
	case "$prev" in
	-o|--output) COMPREPLY=($(compgen -W "table json" -- "$cur")); return 0 ;;
	--status) COMPREPLY=($(compgen -W "enabled disabled" -- "$cur")); return 0 ;;
	--direction) COMPREPLY=($(compgen -W "outbound inbound" -- "$cur")); return 0 ;;
	--digest-algorithms) COMPREPLY=($(compgen -W "MD5 SHA-256 SHA-256,MD5" -- "$cur")); return 0 ;;
	`)
	fmt.Fprintf(&b, "%s) return 0 ;;\n", strings.Join(valueList, "|"))
	b.WriteString(`	esac
	for ((i = 2; i < COMP_CWORD; i++)); do
		w=${COMP_WORDS[i]}
		if [ "$skip" = 1 ]; then
			skip=0
			continue
		fi
		case "$w" in
		`)
	fmt.Fprintf(&b, "%s) skip=1 ;;\n", strings.Join(valueList, "|"))
	b.WriteString(`		-*) ;;
		*)
			if [ -z "$group" ]; then
				group=$w
			elif [ -z "$sub" ]; then
				sub=$w
			fi
			;;
		esac
	done
	case "$group/$sub" in
`)
	for _, k := range keys {
		fmt.Fprintf(&b, "\t%s) words=%q ;;\n", k, cases[k])
	}
	b.WriteString("\tesac\n")
	fmt.Fprintf(&b, "\tcase \"$cur\" in\n\t-*) words=\"$words %s\" ;;\n\tesac\n", strings.Join(globalNames, " "))
	b.WriteString(`	COMPREPLY=($(compgen -W "$words" -- "$cur"))
	return 0
}
complete -o default -F _sipedge sipedge
`)
	return b.String()
}

// commandFlagWords lists a command's flags as they are typed, and those that take a value.
func commandFlagWords(c *command) (names, valueFlags []string) {
	if c.flags == nil {
		return nil, nil
	}
	fs := flag.NewFlagSet("", flag.ContinueOnError)
	c.flags(fs, &cmdOpts{})
	return flagWords(fs)
}

func flagWords(fs *flag.FlagSet) (names, valueFlags []string) {
	fs.VisitAll(func(f *flag.Flag) {
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		names = append(names, dash+f.Name)
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !ok || !b.IsBoolFlag() {
			valueFlags = append(valueFlags, dash+f.Name)
		}
	})
	return names, valueFlags
}
