# Bash completion for xe (txxapi).  Install with
#     xe --bash-completion > /etc/bash_completion.d/xe
# or load it into the running shell with
#     source <(xe --bash-completion)
#
# Everything offered comes from the server, through xe itself, as XAPI's
# completion does: command names from 'xe help --minimal --all', a
# command's parameters from 'xe help <command>', and uuids and
# name-labels from '<class>-list ... --minimal'.  The connection options
# on the line being completed (-s, -p, -u, -pw, -pwf, --nossl,
# --no-verify, socket=) are passed on to those calls.

# One item a line of a --minimal answer (commas split, '\,' and '\\'
# kept as the characters they stand for), a run of plain characters
# taken at once: a character at a time is seconds for the command list.
__xe_split_minimal()
{
    local line item="" part
    IFS= read -r line
    while [[ -n $line ]]; do
        # The text up to the next comma or backslash, taken whole.
        part=${line%%[,\\]*}
        item+=$part
        line=${line:${#part}}
        case $line in
            \\*) item+=${line:1:1}; line=${line:2} ;;
            ,*) printf '%s\n' "$item"; item=""; line=${line:1} ;;
        esac
    done
    [[ -n $item ]] && printf '%s\n' "$item"
}

# xe with the connection options of the line being completed.
__xe_call()
{
    "${__xe_command:-xe}" "$@" "${__xe_connection[@]}" 2>/dev/null
}

__xe_commands()
{
    __xe_call help --minimal --all | __xe_split_minimal
}

# The parameters of a command, one a line, as its help lists them: each
# with its '=' (or ':' for a map), a selector as '<class>=' and the
# fields of that class's list.
__xe_params()
{
    local line items p
    while IFS= read -r line; do
        case $line in
            *"reqd params"*:*|*"optional params"*:*) ;;
            *) continue ;;
        esac
        IFS=',' read -ra items <<< "${line#*: }"
        for p in "${items[@]}"; do
            p=${p# }
            case $p in
                "") ;;
                "<"*"-selectors>")
                    p=${p#<}
                    p=${p%-selectors>}
                    printf '%s=\n' "$p"
                    __xe_fields "$p" | sed -e 's/$/=/'
                    ;;
                *:) printf '%s\n' "$p" ;;
                *) printf '%s=\n' "$p" ;;
            esac
        done
    done < <(__xe_call help "$1")
}

# The fields of a class (what its -list command filters on).
__xe_fields()
{
    __xe_params_raw "$1-list" | grep -v -e '^params$' -e ':' -e '^$'
}

__xe_params_raw()
{
    local line items
    while IFS= read -r line; do
        case $line in
            *"optional params"*:*)
                IFS=',' read -ra items <<< "${line#*: }"
                printf '%s\n' "${items[@]# }"
                ;;
        esac
    done < <(__xe_call help "$1")
}

# The class a command acts on: its longest prefix that is a class (has
# a -param-list).
__xe_class_of()
{
    local cmd=$1 all=$2
    while [[ $cmd == *-* ]]; do
        cmd=${cmd%-*}
        if grep -qx -- "$cmd-param-list" <<< "$all"; then
            printf '%s\n' "$cmd"
            return
        fi
    done
}

# The values a parameter may take, one a line.
__xe_values()
{
    local cmd=$1 param=$2 value=$3 all class
    all=$(__xe_commands)
    case $param in
        uuid)
            class=$(__xe_class_of "$cmd" "$all")
            [[ -n $class ]] && __xe_call "$class-list" params=uuid --minimal |
                __xe_split_minimal
            ;;
        *-uuid)
            class=${param%-uuid}
            grep -qx -- "$class-list" <<< "$all" &&
                __xe_call "$class-list" params=uuid --minimal |
                __xe_split_minimal
            ;;
        vm|host|sr|network|template)
            __xe_call "$param-list" params=name-label --minimal |
                __xe_split_minimal
            ;;
        param-name|params)
            class=$(__xe_class_of "$cmd" "$all")
            [[ -n $class ]] && __xe_fields "$class"
            ;;
        mode)
            [[ $cmd == pif-reconfigure-ip ]] && printf '%s\n' dhcp none static
            ;;
    esac
}

# The part of the word bash replaces: what follows its last word break.
__xe_kept_prefix()
{
    local word=$1 i
    for ((i = ${#word} - 1; i >= 0; i--)); do
        # A space in the word was typed escaped: it does not break it.
        [[ ${word:i:1} == [[:space:]] ]] && continue
        if [[ $COMP_WORDBREAKS == *"${word:i:1}"* ]]; then
            printf '%s' "${word:0:i+1}"
            return
        fi
    done
}

# Offer the candidates (on stdin, one a line) that extend $1.
__xe_offer()
{
    local cur=$1 kept candidate
    kept=$(__xe_kept_prefix "$cur")
    while IFS= read -r candidate; do
        [[ $candidate == "$cur"* ]] || continue
        [[ $candidate == *[=:] || $candidate == *- ]] &&
            compopt -o nospace 2>/dev/null
        candidate=${candidate#"$kept"}
        if [[ $candidate == *[=:] ]]; then
            COMPREPLY+=("$candidate")
        else
            # Quoted for the shell; a comma needs no quoting.
            candidate=$(printf '%q' "$candidate")
            COMPREPLY+=("${candidate//\\,/,}")
        fi
    done
}

_xe()
{
    COMPREPLY=()
    # Words as the user typed them ('=' and ':' do not split them; an
    # escaped space does not either).
    local line=${COMP_LINE:0:COMP_POINT} words cur
    read -a words <<< "$line"
    if [[ $line == *[[:space:]] || ${#words[@]} -eq 0 ]]; then
        words+=("")
    fi
    cur=${words[${#words[@]} - 1]}
    __xe_command=${words[0]}

    # The connection options, and the words that are the command's.
    __xe_connection=()
    local args=() i w
    for ((i = 1; i < ${#words[@]} - 1; i++)); do
        w=${words[i]}
        case $w in
            -s|-p|-u|-pw|-pwf|-h)
                __xe_connection+=("$w" "${words[i + 1]}")
                i=$((i + 1))
                ;;
            --nossl|--no-verify) __xe_connection+=("$w") ;;
            socket=*|server=*|port=*|username=*|password=*)
                __xe_connection+=("$w") ;;
            *) args+=("$w") ;;
        esac
    done

    if [[ ${#args[@]} -eq 0 || ${#args[@]} -eq 1 && ${args[0]} == help ]]
    then
        local cmds=() groups c
        while IFS= read -r c; do
            [[ $c == "$cur"* ]] && cmds+=("$c")
        done < <(__xe_commands)
        # Several groups (vm-, host-...) match: offer the groups first.
        groups=$(printf '%s\n' "${cmds[@]}" | sed -e 's/^\([^-]*-\).*/\1/' |
            sort -u)
        if [[ $(grep -c . <<< "$groups") -gt 1 ]]; then
            __xe_offer "$cur" <<< "$groups"
        else
            __xe_offer "$cur" < <(printf '%s\n' "${cmds[@]}")
        fi
        return 0
    fi

    local cmd=${args[0]}
    if [[ $cur == *=* ]]; then
        local param=${cur%%=*} value=${cur#*=} head=""
        case $param in
            filename|file-name)
                compopt -o default 2>/dev/null
                return 0
                ;;
            params)
                # A comma-separated list: complete its last item.
                [[ $value == *,* ]] && head=${value%,*},
                ;;
        esac
        local v
        __xe_offer "$cur" < <(__xe_values "$cmd" "$param" "$value" |
            while IFS= read -r v; do printf '%s\n' "$param=$head$v"; done)
        return 0
    fi
    __xe_offer "$cur" < <(__xe_params "$cmd")
    return 0
}

complete -F _xe xe
