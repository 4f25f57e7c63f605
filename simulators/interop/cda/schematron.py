"""Our ISO Schematron compiler (queryBinding xslt2) and its Saxon runner.

Why our own compiler: the ANS tree ships no skeleton stylesheets, lxml's
isoschematron refuses ``queryBinding="xslt2"``, and the tree has known defects
(includes whose case differs from the file name, missing includes, a missing
value set) that must become rule-pack warnings instead of crashes.

Steps: resolve includes (case-insensitive fallback, missing ones skipped), expand
abstract rules (``extends``) and abstract patterns (``is-a`` + ``param``), keep the
patterns of the default phase, then generate one XSLT 3.0 stylesheet. Saxon-HE
compiles it (per process: Saxon-HE cannot save a compiled stylesheet).

The generated XSLT is cached on disk, named by its sha256, with a manifest keyed by
the schematron and named by the hashes of every file it was built from (the main
file, each include, the SVS files copied into substituted value sets) and the
existence of the files it probed (missing includes, value sets). A warm start checks
the manifest (hashing the sources, a few milliseconds) and skips the Python steps.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxml import etree

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
_S = f"{{{SCH}}}"
GENERATOR_VERSION = "segur-sim-sch-3"
RESULT_NS = "urn:segur-sim:schematron-result"

_DOC_CALL_RE = re.compile(r"""\b(doc|document)\(\s*(['"])([^'"]+)\2\s*\)""")


@dataclass(frozen=True)
class PackIssue:
    """A defect of the rule pack itself (reported as a warning, never a crash)."""

    code: str
    message: str
    source: str


@dataclass
class CompiledSchematron:
    xslt: str
    key: str
    issues: list[PackIssue]
    source_files: list[Path]
    patterns: int
    asserts: int
    # True when the Python steps were skipped: the manifest on disk was still valid
    from_cache: bool = False


@dataclass
class _Ctx:
    main: Path
    rules_root: Path
    substitutes_dir: Path
    issues: list[PackIssue] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    jdv_index: dict[str, Path] | None = None
    # what the result depends on, for the disk cache: path -> "sha256:<hex>" (content),
    # "present"/"absent" (existence probed), "dir:<mtime_ns>" (a folder listing used)
    deps: dict[str, str] = field(default_factory=dict)
    # files written under the cache directory (substituted value sets)
    outputs: list[Path] = field(default_factory=list)


def _trusted_parser() -> etree.XMLParser:
    # rule packs are chosen by the user, but we still refuse the network and entities
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        remove_comments=True,
        remove_pis=True,
    )


# parsed schematron files, per process: the volets share most of their includes
_PARSED_LOCK = threading.Lock()
_PARSED: dict[str, tuple[tuple[int, int], str, etree._Element]] = {}


def _parse_source(path: Path, ctx: _Ctx) -> etree._Element:
    """Parse a file of the rule pack (a private copy of a per-process parsed tree),
    and note its content hash as a dependency."""
    key = str(path)
    stat = path.stat()
    sig = (stat.st_mtime_ns, stat.st_size)
    with _PARSED_LOCK:
        cached = _PARSED.get(key)
    if cached is None or cached[0] != sig:
        data = path.read_bytes()
        root = etree.fromstring(data, _trusted_parser(), base_url=path.as_uri())
        cached = (sig, hashlib.sha256(data).hexdigest(), root)
        with _PARSED_LOCK:
            _PARSED[key] = cached
    ctx.deps[key] = f"sha256:{cached[1]}"
    return copy.deepcopy(cached[2])


_RESOLVED: dict[str, Path] = {}


def _resolved(path: Path) -> Path:
    """``path.resolve()``, remembered per process (the volets resolve the same
    includes again and again)."""
    key = str(path)
    found = _RESOLVED.get(key)
    if found is None:
        found = _RESOLVED[key] = path.resolve()
    return found


def _resolve_case_insensitive(base: Path, href: str) -> Path | None:
    """Find ``href`` under ``base`` ignoring letter case, one component at a time."""
    current = base
    for part in Path(href).parts:
        if part in ("..", "."):
            current = current / part
            continue
        if not current.is_dir():
            return None
        exact = current / part
        if exact.exists():
            current = exact
            continue
        matches = [c for c in current.iterdir() if c.name.lower() == part.lower()]
        if not matches:
            return None
        current = matches[0]
    return current if current.is_file() else None


def _rel(ctx: _Ctx, path: Path) -> str:
    try:
        return str(_resolved(path).relative_to(_resolved(ctx.rules_root)))
    except ValueError:
        return str(path)


def _resolve_includes(el: etree._Element, here: Path, ctx: _Ctx, stack: tuple[Path, ...]) -> None:
    _rewrite_doc_calls(el, here, ctx)
    for inc in list(el.iter(_S + "include", _S + "extends")):
        href = inc.get("href")
        if not href:
            continue
        parent = inc.getparent()
        if parent is None:
            continue
        target = here.parent / href
        if not target.is_file():
            ctx.deps[os.path.normpath(target)] = "absent"
            fixed = _resolve_case_insensitive(here.parent, href)
            if fixed is None:
                ctx.issues.append(
                    PackIssue(
                        "RULEPACK-INCLUDE-MISSING",
                        f"included file {href!r} does not exist; its rules are skipped",
                        _rel(ctx, here),
                    )
                )
                parent.remove(inc)
                continue
            ctx.issues.append(
                PackIssue(
                    "RULEPACK-INCLUDE-CASE",
                    f"include {href!r} differs from the file name {fixed.name!r} only by letter "
                    "case; the existing file is used",
                    _rel(ctx, here),
                )
            )
            target = fixed
        target = _resolved(target)
        if target in stack:
            ctx.issues.append(
                PackIssue("RULEPACK-INCLUDE-CYCLE", f"include cycle on {href!r}", _rel(ctx, here))
            )
            parent.remove(inc)
            continue
        try:
            included = _parse_source(target, ctx)
        except etree.XMLSyntaxError as exc:
            ctx.issues.append(
                PackIssue(
                    "RULEPACK-INCLUDE-INVALID",
                    f"included file {href!r} is not well-formed: {exc}",
                    _rel(ctx, here),
                )
            )
            parent.remove(inc)
            continue
        ctx.files.append(target)
        _resolve_includes(included, target, ctx, (*stack, target))
        if inc.tag == _S + "extends":
            # <extends href> brings the rule's content in; keep an extends-by-id otherwise
            parent.replace(inc, included)
        else:
            parent.replace(inc, included)


def _jdv_index(ctx: _Ctx) -> dict[str, Path]:
    if ctx.jdv_index is None:
        ctx.jdv_index = {}
        folder = ctx.rules_root / "jeuxDeValeurs"
        if folder.is_dir():
            ctx.deps[str(folder.resolve())] = f"dir:{folder.stat().st_mtime_ns}"
            for path in folder.glob("*.xml"):
                head = path.read_bytes()[:4096]
                match = re.search(rb"<(?:\w+:)?ValueSet\b[^>]*?\sid=\"([^\"]+)\"", head)
                if match:
                    ctx.jdv_index[match.group(1).decode()] = path
    return ctx.jdv_index


def _substitute_value_set(href: str, ctx: _Ctx, where: str) -> Path:
    """A stand-in for a missing ART-DECOR value set, built from the SVS JDV with the
    same OID when the tree has it (JDV_J07 for voc-...5.471), else an empty one."""
    name = Path(href).name
    ctx.substitutes_dir.mkdir(parents=True, exist_ok=True)
    out = ctx.substitutes_dir / name
    match = re.match(r"voc-([0-9.]+)-", name)
    source = _jdv_index(ctx).get(match.group(1)) if match else None
    root = etree.Element("valueSets")
    vs = etree.SubElement(root, "valueSet")
    concepts = etree.SubElement(vs, "conceptList")
    if source is not None:
        ctx.deps[str(source.resolve())] = f"sha256:{_sha256_file(source)}"
        svs = etree.parse(str(source), _trusted_parser())
        for concept in svs.iter("{urn:ihe:iti:svs:2008}Concept"):
            etree.SubElement(
                concepts,
                "concept",
                code=concept.get("code") or "",
                codeSystem=concept.get("codeSystem") or "",
                displayName=concept.get("displayName") or "",
            )
        ctx.issues.append(
            PackIssue(
                "RULEPACK-VALUESET-MISSING",
                f"value set {href!r} is missing; substituted with {source.name} (same OID)",
                where,
            )
        )
    else:
        ctx.issues.append(
            PackIssue(
                "RULEPACK-VALUESET-MISSING",
                f"value set {href!r} is missing and no JDV has its OID; rules using it will "
                "reject every code",
                where,
            )
        )
    _write_atomic(out, etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    ctx.outputs.append(out)
    return out


_HASHES: dict[str, tuple[tuple[int, int], str]] = {}


def _sha256_file(path: Path) -> str:
    """The content's sha256, remembered per process while the file's modification
    time and size stay the same."""
    stat = path.stat()
    sig = (stat.st_mtime_ns, stat.st_size)
    known = _HASHES.get(str(path))
    if known is not None and known[0] == sig:
        return known[1]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _HASHES[str(path)] = (sig, digest)
    return digest


def _write_atomic(path: Path, data: bytes) -> None:
    """Write whole or not at all: parallel compilers may write the same file."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _rewrite_doc_calls(el: etree._Element, here: Path, ctx: _Ctx) -> None:
    """Make literal doc()/document() URIs absolute; replace missing targets."""
    for node in el.iter():
        if not isinstance(node.tag, str):
            continue
        for attr in ("test", "context", "select", "value"):
            value = node.get(attr)
            if not value or "doc" not in value:
                continue

            def fix(m: re.Match[str]) -> str:
                href = m.group(3)
                if "://" in href or href.startswith("$"):
                    return m.group(0)
                for base in (ctx.main.parent, here.parent):
                    cand = base / href
                    found = cand.is_file()
                    ctx.deps[os.path.normpath(cand)] = "present" if found else "absent"
                    if found:
                        return f"{m.group(1)}('{_resolved(cand).as_uri()}')"
                sub = _substitute_value_set(href, ctx, _rel(ctx, here))
                return f"{m.group(1)}('{_resolved(sub).as_uri()}')"

            node.set(attr, _DOC_CALL_RE.sub(fix, value))


def _collect_abstract_rules(schema: etree._Element, ctx: _Ctx) -> dict[str, etree._Element]:
    """Take the abstract rules out of the schema. ``extends`` stays in place and is
    compiled to a call of one named template per abstract rule: ART-DECOR rules
    extend data-type rules thousands of times, and inlining them would multiply the
    stylesheet (and Saxon's compile time) by ten."""
    abstract: dict[str, etree._Element] = {}
    for rule in list(schema.iter(_S + "rule")):
        if rule.get("abstract") == "true" and rule.get("id"):
            abstract[rule.get("id") or ""] = rule
            parent = rule.getparent()
            if parent is not None:
                parent.remove(rule)
    for holder in [*abstract.values(), *schema.iter(_S + "rule")]:
        for ext in list(holder.findall(_S + "extends")):
            if ext.get("rule") not in abstract:
                ctx.issues.append(
                    PackIssue(
                        "RULEPACK-EXTENDS-MISSING",
                        f"abstract rule {ext.get('rule')!r} not found",
                        "",
                    )
                )
                holder.remove(ext)
    return abstract


def _expand_abstract_patterns(schema: etree._Element, ctx: _Ctx) -> None:
    abstract = {p.get("id"): p for p in schema.iter(_S + "pattern") if p.get("abstract") == "true"}
    for inst in list(schema.iter(_S + "pattern")):
        base_id = inst.get("is-a")
        if not base_id:
            continue
        base = abstract.get(base_id)
        if base is None:
            ctx.issues.append(
                PackIssue(
                    "RULEPACK-ABSTRACT-MISSING", f"abstract pattern {base_id!r} not found", ""
                )
            )
            continue
        params = {p.get("name") or "": p.get("value") or "" for p in inst.findall(_S + "param")}
        names = sorted(params, key=len, reverse=True)
        copied = copy.deepcopy(base)
        for node in copied.iter():
            if not isinstance(node.tag, str):
                continue
            for attr in ("context", "test", "select", "value", "path"):
                value = node.get(attr)
                if value and "$" in value:
                    # one parameter after the other, longest name first: a value may
                    # itself name a parameter substituted next (as before)
                    for name in names:
                        if "$" + name not in value:
                            continue
                        replacement = params[name]
                        value = re.sub(
                            r"\$" + re.escape(name) + r"(?![\w.-])",
                            lambda _m, r=replacement: r,  # type: ignore[misc]
                            value,
                        )
                    node.set(attr, value)
        for child in list(inst):
            inst.remove(child)
        for child in list(copied):
            inst.append(child)
        del inst.attrib["is-a"]
    for pattern in abstract.values():
        parent = pattern.getparent()
        if parent is not None:
            parent.remove(pattern)


def _active_patterns(schema: etree._Element, phase: str | None) -> list[etree._Element]:
    patterns = [p for p in schema.iter(_S + "pattern") if p.get("abstract") != "true"]
    phase = phase or schema.get("defaultPhase")
    if not phase or phase == "#ALL":
        return patterns
    for ph in schema.iter(_S + "phase"):
        if ph.get("id") == phase:
            active = {a.get("pattern") for a in ph.findall(_S + "active")}
            return [p for p in patterns if p.get("id") in active]
    return patterns


def _q(text: str) -> str:
    return text.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def _message_xsl(assertion: etree._Element) -> str:
    parts: list[str] = []
    if assertion.text:
        parts.append(f"<xsl:text>{_q(assertion.text)}</xsl:text>")
    for child in assertion:
        if isinstance(child.tag, str):
            local = etree.QName(child).localname
            if local == "value-of":
                parts.append(f'<xsl:value-of select="{_q(child.get("select") or "")}"/>')
            elif local == "name":
                path = child.get("path") or "."
                parts.append(f'<xsl:value-of select="name({_q(path)})"/>')
            else:
                parts.append(f"<xsl:text>{_q(''.join(child.itertext()))}</xsl:text>")
        if child.tail:
            parts.append(f"<xsl:text>{_q(child.tail)}</xsl:text>")
    return "".join(parts)


def _needs_attributes(context: str) -> bool:
    depth = 0
    for ch in context:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "@" and depth == 0:
            return True
    return "attribute::" in context


_VAR_RE = re.compile(r"\$([A-Za-z_][\w.-]*)")
_BOUND_RE = re.compile(r"\$([A-Za-z_][\w.-]*)\s*(?:in\b|:=)")


def _reachable(name: str, abstract: dict[str, etree._Element], seen: set[str]) -> set[str]:
    if name in seen or name not in abstract:
        return seen
    seen.add(name)
    for ext in abstract[name].findall(_S + "extends"):
        _reachable(ext.get("rule") or "", abstract, seen)
    return seen


def _inline_set(abstract: dict[str, etree._Element], global_names: set[str]) -> set[str]:
    """Abstract rules that use variables of the rule extending them: those are copied
    in place (ISO semantics), the others become one shared named template."""
    inline: set[str] = set()
    for name in abstract:
        used: set[str] = set()
        defined: set[str] = set()
        for member in _reachable(name, abstract, set()):
            for node in abstract[member].iter():
                if not isinstance(node.tag, str):
                    continue
                if etree.QName(node).localname == "let":
                    defined.add(node.get("name") or "")
                for attr in ("test", "select", "value"):
                    expr = node.get(attr) or ""
                    used.update(_VAR_RE.findall(expr))
                    # range variables of for/some/every/let expressions are bound locally
                    defined.update(_BOUND_RE.findall(expr))
        if used - defined - global_names:
            inline.add(name)
    return inline


def _rule_body(
    rule: etree._Element,
    rid: str,
    pid: str,
    out: list[str],
    abstract: dict[str, etree._Element],
    inline: set[str],
    depth: int = 0,
) -> int:
    asserts = 0
    for k, item in enumerate(rule):
        if not isinstance(item.tag, str):
            continue
        local = etree.QName(item).localname
        if local == "let":
            out.append(
                f'<xsl:variable name="{_q(item.get("name") or "")}" '
                f'select="{_q(item.get("value") or "()")}"/>'
            )
        elif local == "extends":
            target = item.get("rule") or ""
            if target in inline and depth < 20:
                asserts += _rule_body(
                    abstract[target], target, pid, out, abstract, inline, depth + 1
                )
            else:
                out.append(f'<xsl:call-template name="abstract-{_q(_ncname(target))}"/>')
        elif local in ("assert", "report"):
            asserts += 1
            test = item.get("test") or "true()"
            cond = f"not({test})" if local == "assert" else f"({test})"
            aid = item.get("id") or f"{rid}-{local[0]}{k}"
            role = item.get("role") or ""
            out.append(
                f'<xsl:if test="{_q(cond)}"><svrl:f id="{_q(aid)}" role="{_q(role)}" '
                f'pattern="{_q(pid)}" kind="{local}" loc="{{path()}}">'
                f"{_message_xsl(item)}</svrl:f></xsl:if>"
            )
    return asserts


def _ncname(name: str) -> str:
    return re.sub(r"[^\w.-]", "_", name)


_SPLIT_RE: dict[str, re.Pattern[str]] = {}


def _split_top(expr: str, separator: str) -> list[str] | None:
    """Split on ``separator`` outside brackets and quotes (None when unbalanced)."""
    pattern = _SPLIT_RE.get(separator)
    if pattern is None:
        pattern = _SPLIT_RE[separator] = re.compile(r"[()\[\]{}'\"]|" + re.escape(separator))
    parts: list[str] = []
    depth = 0
    quote = ""
    start = 0
    # only the characters that matter, not every character of the expression
    for match in pattern.finditer(expr):
        k, ch = match.start(), match.group()
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                return None
        elif ch == separator and depth == 0:
            parts.append(expr[start:k].strip())
            start = k + 1
    if quote or depth:
        return None
    parts.append(expr[start:].strip())
    return parts


_UNSELECTABLE = re.compile(r"\bcurrent\s*\(|\bunion\b|\bexcept\b|\bintersect\b|^\s*\(")

# a path as (separator, step) pairs: "//a/b" -> [("//", "a"), ("/", "b")]
_Steps = tuple[tuple[str, str], ...]


def _path_steps(path: str) -> _Steps | None:
    if path == "/":
        return ()
    pieces = _split_top(path, "/")
    if pieces is None or pieces[0] != "":
        return None
    steps: list[tuple[str, str]] = []
    sep = "/"
    for piece in pieces[1:]:
        if piece == "":
            if sep == "//":
                return None  # "///"
            sep = "//"
            continue
        steps.append((sep, piece))
        sep = "/"
    return tuple(steps) if sep == "/" else None


@dataclass
class _Trie:
    terminal: bool = False
    children: dict[tuple[str, str], _Trie] = field(default_factory=dict)


def _emit(node: _Trie, *, at_root: bool) -> str:
    items = ["." if not at_root else "/"] if node.terminal else []
    for (sep, step), child in node.children.items():
        head = f"{sep}{step}" if at_root else (f".//{step}" if sep == "//" else step)
        if child.children:
            head += "/" + _emit(child, at_root=False)
        items.append(head)
    if at_root:
        return " | ".join(items)
    return items[0] if len(items) == 1 else "(" + " | ".join(items) + ")"


def _select_for(contexts: list[str]) -> str | None:
    """One expression selecting every node that a rule of the pattern matches.

    A node matches pattern P when it is in ``root(.)//(P)`` (XSLT 2.0, 5.5.3), so the
    pattern's nodes are within the union of ``//P`` (``P`` when absolute) over its
    rules. Selecting them instead of walking the whole document with apply-templates
    is what makes header rules cost the header, not the body: StrucMin's 770 rules all
    hang under ``/ClinicalDocument``, and 148 of them end in ``*`` (tested on every
    element by a walk).

    The paths are merged on their common steps (``a/(b | c/(d | e))``), so that a
    shared prefix is evaluated once. They keep their predicates: selecting a superset
    (predicates dropped, the match patterns filtering) compiles 0.1 s faster but runs
    StrucMin three times slower, every extra node being tried against every rule.
    Each selected node goes to the first matching rule, by priority, as ISO
    Schematron says. None: keep the walk (``current()`` and anything we do not parse).
    """
    root = _Trie()
    for context in contexts:
        if _UNSELECTABLE.search(context):
            return None
        parts = _split_top(context, "|")
        if parts is None or not all(parts):
            return None
        for part in parts:
            steps = _path_steps(part if part.startswith("/") else f"//{part}")
            if steps is None:
                return None
            node = root
            for key in steps:
                node = node.children.setdefault(key, _Trie())
            node.terminal = True
    if not root.children and not root.terminal:
        return None
    return _emit(root, at_root=True)


def _generate(
    schema: etree._Element,
    patterns: list[etree._Element],
    abstract_rules: dict[str, etree._Element],
    base_uri: str,
    *,
    traverse: bool = False,
) -> tuple[str, int]:
    ns_decls = {"xsl": XSL, "svrl": RESULT_NS}
    for ns in schema.iter(_S + "ns"):
        prefix, uri = ns.get("prefix"), ns.get("uri")
        if prefix and uri and prefix not in ("xsl", "svrl", "xml"):
            ns_decls[prefix] = uri
    # prefixes declared with xmlns on included elements, not with <ns>
    for node in schema.iter():
        if isinstance(node.tag, str):
            for prefix, uri in node.nsmap.items():
                if prefix and prefix not in ns_decls and prefix != "xml":
                    ns_decls[prefix] = uri
    for rule in abstract_rules.values():
        for node in rule.iter():
            if isinstance(node.tag, str):
                for prefix, uri in node.nsmap.items():
                    if prefix and prefix not in ns_decls and prefix != "xml":
                        ns_decls[prefix] = uri
    ns_attr = " ".join(f'xmlns:{p}="{_q(u)}"' for p, u in ns_decls.items())
    out: list[str] = [
        f'<xsl:stylesheet version="3.0" {ns_attr} xml:base="{_q(base_uri)}" '
        'exclude-result-prefixes="#all">',
        '<xsl:output method="xml" indent="no"/>',
    ]
    seen_globals: set[str] = set()
    lets = list(schema.findall(_S + "let"))
    for pattern in schema.iter(_S + "pattern"):
        lets.extend(pattern.findall(_S + "let"))
    for let in lets:
        name = let.get("name") or ""
        if name in seen_globals:
            continue
        seen_globals.add(name)
        out.append(f'<xsl:variable name="{_q(name)}" select="{_q(let.get("value") or "()")}"/>')
    inline = _inline_set(abstract_rules, seen_globals)
    called: set[str] = set()
    for pattern in patterns:
        for ext in pattern.iter(_S + "extends"):
            _reachable(ext.get("rule") or "", abstract_rules, called)
    called -= inline
    # abstract rules reached through inlined ones are called too
    for name in list(inline):
        for member in _reachable(name, abstract_rules, set()):
            if member not in inline:
                called.add(member)
    out.append('<xsl:template match="/"><svrl:r>')
    pattern_rules = [[r for r in p.findall(_S + "rule") if r.get("context")] for p in patterns]
    selects = [
        None if traverse else _select_for([r.get("context") or "" for r in rules])
        for rules in pattern_rules
    ]
    for i, select in enumerate(selects):
        out.append(f'<xsl:apply-templates select="{_q(select or "/")}" mode="M{i}"/>')
    out.append("</svrl:r></xsl:template>")
    asserts = 0
    for i, pattern in enumerate(patterns):
        pid = pattern.get("id") or f"pattern-{i}"
        rules = pattern_rules[i]
        if selects[i] is not None:
            # the nodes come from the select: no walk over the whole document (and
            # a node no rule matches, were there one, does nothing)
            recurse = ""
            out.append(f'<xsl:template match="@*|node()" priority="-2" mode="M{i}"/>')
        else:
            attrs = any(_needs_attributes(r.get("context") or "") for r in rules)
            children = "@*|*" if attrs else "*"
            recurse = f'<xsl:apply-templates select="{children}" mode="M{i}"/>'
            out.append(
                f'<xsl:template match="@*|node()" priority="-2" mode="M{i}">{recurse}'
                "</xsl:template>"
            )
        for j, rule in enumerate(rules):
            rid = rule.get("id") or f"{pid}-r{j}"
            out.append(
                f'<xsl:template match="{_q(rule.get("context") or "")}" '
                f'priority="{10000 - j}" mode="M{i}">'
            )
            asserts += _rule_body(rule, rid, pid, out, abstract_rules, inline)
            out.append(f"{recurse}</xsl:template>")
    for aid in sorted(called):
        out.append(f'<xsl:template name="abstract-{_q(_ncname(aid))}">')
        asserts += _rule_body(abstract_rules[aid], aid, aid, out, abstract_rules, inline)
        out.append("</xsl:template>")
    out.append("</xsl:stylesheet>")
    return "\n".join(out), asserts


MANIFEST_VERSION = 1


def _manifest_path(
    main: Path, rules_root: Path, cache_dir: Path, phase: str | None, traverse: bool
) -> Path:
    ident = json.dumps(
        [
            MANIFEST_VERSION,
            GENERATOR_VERSION,
            str(main.resolve()),
            str(rules_root.resolve()),
            str(cache_dir.resolve()),
            phase,
            traverse,
        ]
    )
    return cache_dir / "manifests" / f"{hashlib.sha256(ident.encode()).hexdigest()[:40]}.json"


def _dep_holds(path: str, state: str) -> bool:
    try:
        if state == "absent":
            return not os.path.isfile(path)
        if state == "present":
            return os.path.isfile(path)
        if state.startswith("dir:"):
            return state == f"dir:{os.stat(path).st_mtime_ns}"
        if state.startswith("sha256:"):
            return state == f"sha256:{_sha256_file(Path(path))}"
    except OSError:
        return False
    return False


def xsl_path_for(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.xsl"


def _load_manifest(path: Path, cache_dir: Path) -> CompiledSchematron | None:
    """The cached result when every source still has the hash (or the existence) it
    had: None otherwise, or when anything is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != MANIFEST_VERSION:
            return None
        deps: dict[str, str] = data["deps"]
        if not all(_dep_holds(dep, state) for dep, state in deps.items()):
            return None
        if not all(os.path.isfile(out) for out in data["outputs"]):
            return None
        key = str(data["key"])
        xslt = xsl_path_for(cache_dir, key).read_text(encoding="utf-8")
        return CompiledSchematron(
            xslt=xslt,
            key=key,
            issues=[PackIssue(**issue) for issue in data["issues"]],
            source_files=[Path(f) for f in data["files"]],
            patterns=int(data["patterns"]),
            asserts=int(data["asserts"]),
            from_cache=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _save_manifest(path: Path, compiled: CompiledSchematron, ctx: _Ctx) -> None:
    data = {
        "version": MANIFEST_VERSION,
        "key": compiled.key,
        "issues": [
            {"code": i.code, "message": i.message, "source": i.source} for i in compiled.issues
        ],
        "files": [str(f) for f in compiled.source_files],
        "patterns": compiled.patterns,
        "asserts": compiled.asserts,
        "deps": ctx.deps,
        "outputs": [str(out) for out in ctx.outputs],
    }
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(data, indent=1, ensure_ascii=False).encode("utf-8"))
    except OSError:
        pass  # a read-only cache: compile again next time


def compile_schematron(
    main: Path,
    *,
    rules_root: Path,
    cache_dir: Path,
    phase: str | None = None,
    traverse: bool = False,
    use_cache: bool = True,
) -> CompiledSchematron:
    """Resolve and expand a schematron into XSLT text (no Saxon involved).

    With ``use_cache`` a valid manifest under ``cache_dir`` gives the result at once;
    otherwise it is computed, and the XSLT and the manifest are written there."""
    manifest = _manifest_path(main, rules_root, cache_dir, phase, traverse)
    if use_cache:
        cached = _load_manifest(manifest, cache_dir)
        if cached is not None:
            return cached
    ctx = _Ctx(main=main.resolve(), rules_root=rules_root, substitutes_dir=cache_dir / "valuesets")
    schema = _parse_source(main.resolve(), ctx)
    ctx.files.append(main.resolve())
    binding = schema.get("queryBinding")
    if binding not in (None, "xslt2", "xslt3", "xslt", "xpath2"):
        ctx.issues.append(
            PackIssue("RULEPACK-BINDING", f"queryBinding {binding!r} run as xslt2", _rel(ctx, main))
        )
    _resolve_includes(schema, main.resolve(), ctx, (main.resolve(),))
    abstract_rules = _collect_abstract_rules(schema, ctx)
    _expand_abstract_patterns(schema, ctx)
    patterns = _active_patterns(schema, phase)
    xslt, asserts = _generate(
        schema, patterns, abstract_rules, main.resolve().as_uri(), traverse=traverse
    )
    key = hashlib.sha256((GENERATOR_VERSION + xslt).encode("utf-8")).hexdigest()
    compiled = CompiledSchematron(xslt, key, ctx.issues, ctx.files, len(patterns), asserts)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        xsl_path = xsl_path_for(cache_dir, key)
        if not xsl_path.is_file():
            _write_atomic(xsl_path, xslt.encode("utf-8"))
    except OSError:
        return compiled  # no cache: SaxonSchematron says why if it cannot write either
    _save_manifest(manifest, compiled, ctx)
    return compiled


# -- Saxon -------------------------------------------------------------------------

_SAXON_LOCK = threading.RLock()
_PROCESSOR: Any = None


def saxon_processor() -> Any:
    global _PROCESSOR
    with _SAXON_LOCK:
        if _PROCESSOR is None:
            from saxonche import PySaxonProcessor

            _PROCESSOR = PySaxonProcessor(license=False)
        return _PROCESSOR


@dataclass
class Failure:
    assert_id: str
    role: str
    pattern: str
    kind: str
    path: str
    message: str


def saxon_document(xml_text: str) -> Any:
    """Parse once for Saxon; hand the node to every schematron of the document."""
    proc = saxon_processor()
    with _SAXON_LOCK:
        return proc.parse_xml(xml_text=xml_text)


class SaxonSchematron:
    """A compiled schematron, ready to run (not thread-safe: guarded by a lock).

    Saxon-HE cannot export SEF (an EE feature), so the cache keeps the generated
    XSLT (keyed by its sha256) and each process compiles it once, then reuses the
    executable for every document (see ``rulepack._COMPILED``).
    """

    def __init__(self, compiled: CompiledSchematron, cache_dir: Path) -> None:
        self.compiled = compiled
        cache_dir.mkdir(parents=True, exist_ok=True)
        xsl_path = xsl_path_for(cache_dir, compiled.key)
        # the Python steps skipped (valid manifest), or at least the XSLT on disk
        self.from_cache = compiled.from_cache
        if not xsl_path.is_file():
            _write_atomic(xsl_path, compiled.xslt.encode("utf-8"))
        proc = saxon_processor()
        with _SAXON_LOCK:
            xslt = proc.new_xslt30_processor()
            self._executable = xslt.compile_stylesheet(stylesheet_file=str(xsl_path))

    def run(self, document: str | Any) -> list[Failure]:
        """Run on XML text, or on a node from :func:`saxon_document` (parsed once)."""
        node = saxon_document(document) if isinstance(document, str) else document
        with _SAXON_LOCK:
            result = self._executable.transform_to_string(xdm_node=node)
        if not result:
            return []
        root = etree.fromstring(result.encode("utf-8"))
        return [
            Failure(
                assert_id=f.get("id") or "",
                role=f.get("role") or "",
                pattern=f.get("pattern") or "",
                kind=f.get("kind") or "",
                path=f.get("loc") or "",
                message=" ".join("".join(f.itertext()).split()),
            )
            for f in root.iter(f"{{{RESULT_NS}}}f")
        ]
