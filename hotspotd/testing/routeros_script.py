"""RouterOS CLI scripts run against :class:`~hotspotd.testing.routeros.RouterOSSimulator`'s menus.

What an owner pastes into the router's terminal (or loads with ``/import``) is checked here the way
the console checks it, so a test can run ``hotspotd router-config mikrotik``'s output unchanged.
The syntax follows MikroTik's scripting manual (help.mikrotik.com/docs/display/ROS/Scripting,
"Line structure", "Command-line", "Conditional statement", "Loops"):

* command lines end at a newline or ``;``; ``\\`` at the end of a line joins the next; ``#`` starts a
  comment where a command would start; ``[prefix] [path] command [uparam] [param=value]..``;
* a path is absolute (``/ip hotspot profile set ...``, also ``/ip/hotspot/profile``) or relative to the
  menu of the command around it (``/radius remove [find comment=x]``); a path alone changes the menu;
* ``[...]`` runs a command and gives its value, ``{...}`` is a block, ``(...)`` an expression with
  ``. = != < > <= >= && || ! and or``; ``"..."`` strings with ``\\" \\\\ \\$ \\? \\n \\t`` and ``\\XX`` escapes;
  ``$name`` variables;
* ``:if (c) do={..} else={..}``, ``:foreach v in=.. do={..}``, ``:local``/``:global``/``:set``, ``:put``,
  ``:error``, ``:len``, ``:log``; menu verbs ``add set remove print find get`` where the menu has them
  (``get``/``find`` wherever it prints).

Every ``add``/``set`` goes through the simulator's own checks (the same as over the API), so an
unknown menu, command or parameter is refused as the console refuses it, with RouterOS's console
wording: ``bad command name X (line N column M)`` for a menu or command it does not have and
``expected end of command (line N column M)`` for a parameter it does not know. Those two sentences
are the console's, recalled from using it (the manual does not list its error messages); the
column is the 1-based column where the offending word starts, the simulator's choice. A bad value
keeps the simulator's API wording (``invalid value for argument X``) with the same position.
The script runs as the router's full-rights owner would run it, under the simulator's lock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .routeros import Menu, RouterOSSimulator

#: verbs a script may use in a menu: RouterOS gives every printable menu ``find`` and ``get``
_READ = {"print": "print", "find": "print", "get": "print"}


class ScriptError(Exception):
    """The console refused a line: ``message (line N column M)``; ``line``/``column`` 1-based."""

    def __init__(self, message: str, line: int, column: int):
        super().__init__(f"{message} (line {line} column {column})")
        self.reason, self.line, self.column = message, line, column


# ---------------------------------------------------------------- syntax tree

@dataclass
class _Node:
    pos: int


@dataclass
class _Lit(_Node):
    text: str
    quoted: bool = False


@dataclass
class _Var(_Node):
    name: str


@dataclass
class _Sub(_Node):          # [command]
    command: "_Command | None"


@dataclass
class _Block(_Node):        # {commands}
    commands: list["_Command"]


@dataclass
class _Expr(_Node):         # (operand op operand ...)
    items: list[Any]        # _Node operands and str operators, in order


@dataclass
class _Arg(_Node):
    key: str | None         # None for an unnamed parameter (uparam) or a path/command word
    value: _Node


@dataclass
class _Command(_Node):
    words: list[_Arg] = field(default_factory=list)


_OPS = ("&&", "||", "!=", "<=", ">=", "=", "<", ">", ".", "!")
_BARE_END = set(" \t\r\n;[]{}()\"")


class _Parser:
    def __init__(self, text: str):
        self.text, self.i = text, 0

    def where(self, pos: int) -> tuple[int, int]:
        line = self.text.count("\n", 0, pos) + 1
        return line, pos - (self.text.rfind("\n", 0, pos) + 1) + 1

    def fail(self, message: str, pos: int):
        raise ScriptError(message, *self.where(pos))

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.text[j] if j < len(self.text) else ""

    def skip_space(self, newlines: bool) -> None:
        while True:
            ch = self.peek()
            if ch in (" ", "\t", "\r") or (newlines and ch == "\n"):
                self.i += 1
            elif ch == "\\" and self.peek(1) in ("\n", "\r"):   # line joining
                self.i += 2 if self.peek(1) == "\n" else 1
            else:
                return

    # script := command* ; a block's commands end at "}"
    def commands(self, closer: str = "") -> list[_Command]:
        out = []
        while True:
            self.skip_space(newlines=True)
            ch = self.peek()
            if ch == ";":
                self.i += 1
                continue
            if ch == "#":
                while self.peek() not in ("", "\n"):
                    self.i += 1
                continue
            if ch == "":
                if closer:
                    self.fail(f"missing {closer}", self.i)
                return out
            if ch == closer:
                self.i += 1
                return out
            if ch in "]})":
                self.fail(f"unexpected {ch}", self.i)
            out.append(self.command(closer))

    def command(self, closer: str) -> _Command:
        cmd = _Command(self.i)
        while True:
            self.skip_space(newlines=bool(closer in "])" and closer))
            ch = self.peek()
            if ch in ("", "\n", ";") or ch == closer or ch in "]})":
                return cmd
            cmd.words.append(self.arg())

    def arg(self) -> _Arg:
        start = self.i
        if self.peek() not in "[{(\"$":
            word = self.bare(stop_at_equals=True)
            if self.peek() == "=":
                self.i += 1
                return _Arg(start, word, self.value())
            return _Arg(start, None, _Lit(start, word))
        return _Arg(start, None, self.value())

    def value(self) -> _Node:
        start, ch = self.i, self.peek()
        if ch == "[":
            self.i += 1
            self.skip_space(newlines=True)
            if self.peek() == "]":
                self.i += 1
                return _Sub(start, None)
            inner = self.command("]")
            self.skip_space(newlines=True)
            if self.peek() != "]":
                self.fail("missing ]", self.i)
            self.i += 1
            return _Sub(start, inner)
        if ch == "{":
            self.i += 1
            return _Block(start, self.commands("}"))
        if ch == "(":
            self.i += 1
            return self.expression(start)
        if ch == '"':
            return self.string()
        if ch == "$":
            self.i += 1
            name = self.bare(stop_at_equals=True)
            if not name:
                self.fail("missing variable name", start)
            return _Var(start, name)
        if ch in _BARE_END or ch == "":
            self.fail("missing value", start)
        return _Lit(start, self.bare(stop_at_equals=False))

    def bare(self, stop_at_equals: bool) -> str:
        start = self.i
        while self.peek() and self.peek() not in _BARE_END and not (stop_at_equals and self.peek() == "="):
            if self.peek() == "$" and self.i > start:
                break
            self.i += 1
        return self.text[start:self.i]

    def string(self) -> _Lit:
        start = self.i
        self.i += 1
        out = []
        while True:
            ch = self.peek()
            if ch == "":
                self.fail("unterminated string", start)
            self.i += 1
            if ch == '"':
                return _Lit(start, "".join(out), quoted=True)
            if ch == "$":
                self.fail("variables inside strings are not supported by the simulator: use (\"a\" . $v)",
                          self.i - 1)
            if ch != "\\":
                out.append(ch)
                continue
            nxt = self.peek()
            self.i += 1
            if nxt == "\n":
                continue                                  # a string continues on the next line
            if re.fullmatch(r"[0-9A-F]", nxt) and re.fullmatch(r"[0-9A-F]", self.peek()):
                out.append(chr(int(nxt + self.peek(), 16)))
                self.i += 1
            elif nxt in "\"\\$?_abfnrtv":
                out.append({"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
                            "_": " "}.get(nxt, nxt))
            else:
                self.fail("invalid escape in string", self.i - 2)

    def expression(self, start: int) -> _Expr:
        items: list[Any] = []
        while True:
            self.skip_space(newlines=True)
            ch = self.peek()
            if ch == "":
                self.fail("missing )", start)
            if ch == ")":
                self.i += 1
                return _Expr(start, items)
            op = next((o for o in _OPS if self.text.startswith(o, self.i)), None)
            if op is not None and not (op == "." and self.peek(1).isdigit()):
                items.append(op)
                self.i += len(op)
                continue
            if ch in "[{(\"$":
                items.append(self.value())
                continue
            pos = self.i
            while self.peek() and self.peek() not in _BARE_END and not any(
                    self.text.startswith(o, self.i) for o in _OPS if o not in (".",)):
                self.i += 1
            word = self.text[pos:self.i]
            items.append("and" if word == "and" else "or" if word == "or" else _Lit(pos, word))


# ---------------------------------------------------------------- running it

class _Frame:
    def __init__(self, parent: "_Frame | None" = None):
        self.parent, self.vars = parent, {}

    def lookup(self, name: str) -> "_Frame | None":
        frame = self
        while frame is not None and name not in frame.vars:
            frame = frame.parent
        return frame


class _Runner:
    def __init__(self, sim: "RouterOSSimulator", text: str):
        from . import routeros
        self.sim, self.menus = sim, routeros.MENUS
        self.parser = _Parser(text)
        self.globals = _Frame()
        self.output: list[str] = []
        # every prefix of a menu path is a place the console can stand ("/ip", "/ip/hotspot/walled-garden")
        self.places = {"/"} | {p[:i] for p in self.menus for i in range(2, len(p) + 1) if i == len(p) or p[i] == "/"}

    def fail(self, message: str, pos: int):
        self.parser.fail(message, pos)

    def run(self) -> list[str]:
        commands = self.parser.commands()
        menu = "/"
        for command in commands:   # a path alone on a top-level line moves the console there
            menu = self.execute(command, menu, self.globals, top=True)
        return self.output

    def block(self, block: _Node, menu: str, frame: _Frame) -> None:
        if not isinstance(block, _Block):
            self.fail("expected a block { }", block.pos)
        inner = _Frame(frame)
        here = menu
        for command in block.commands:
            here = self.execute(command, here, inner, top=True)

    def execute(self, command: _Command, menu: str, frame: _Frame, top: bool = False):
        """Run one command line; with ``top`` returns the menu the console is in afterwards,
        else the command's value."""
        words = command.words
        if not words:
            return menu if top else None
        first = words[0]
        if first.key is None and isinstance(first.value, _Block):       # { ... } alone: a local scope
            self.block(first.value, menu, frame)
            return menu if top else None
        if first.key is None and isinstance(first.value, _Lit) and first.value.text.startswith(":"):
            value = self.builtin(first.value.text, first.pos, words[1:], menu, frame)
            return menu if top else value
        path, rest = self.path(words, menu)
        if not rest:
            if not top:
                self.fail("missing command", command.pos)
            return path
        verb_arg = rest[0]
        if verb_arg.key is not None or not isinstance(verb_arg.value, _Lit) or verb_arg.value.quoted:
            self.fail("expected command name", verb_arg.pos)
        value = self.menu_command(path, verb_arg.value.text, verb_arg.pos, rest[1:], frame)
        return menu if top else value

    def path(self, words: list[_Arg], menu: str) -> tuple[str, list[_Arg]]:
        """Walk menu words (``/ip hotspot``, ``/ip/hotspot``, relative ``profile``) to the command."""
        at, i = menu, 0
        while i < len(words):
            word = words[i]
            if word.key is not None or not isinstance(word.value, _Lit) or word.value.quoted:
                break
            text = word.value.text
            if text.startswith("/"):
                if i > 0:
                    self.fail(f"bad command name {text}", word.pos)
                at = "/"
                text = text[1:]
            parts = [p for p in text.split("/") if p]
            candidate = at
            for part in parts:
                candidate = (candidate.rstrip("/") + "/" + part) if part != ".." else (
                    candidate.rsplit("/", 1)[0] or "/")
            if candidate not in self.places:
                if text and not word.value.text.startswith("/") and len(parts) == 1:
                    break                               # not a menu: the command's name
                self.fail(f"bad command name {parts[-1] if parts else text}", word.pos)
            at = candidate
            i += 1
        return at, words[i:]

    # ---- values

    def value(self, node: _Node, menu: str, frame: _Frame) -> Any:
        if isinstance(node, _Lit):
            return node.text
        if isinstance(node, _Var):
            holder = frame.lookup(node.name) or self.globals.lookup(node.name)
            if holder is None:
                return ""                               # RouterOS: an unknown variable is nothing
            return holder.vars[node.name]
        if isinstance(node, _Sub):
            return None if node.command is None else self.execute(node.command, menu, frame)
        if isinstance(node, _Expr):
            return self.expression(node, menu, frame)
        if isinstance(node, _Block):
            return node
        raise AssertionError(node)

    def expression(self, expr: _Expr, menu: str, frame: _Frame) -> Any:
        items = list(expr.items)
        if not items:
            self.fail("missing expression", expr.pos)
        # prefix "!" binds to the operand after it
        operands: list[Any] = []
        ops: list[str] = []
        expect_operand = True
        negate = 0
        for item in items:
            if expect_operand:
                if item == "!":
                    negate += 1
                    continue
                if isinstance(item, str):
                    self.fail(f"unexpected {item}", expr.pos)
                value = self.value(item, menu, frame)
                for _ in range(negate):
                    value = not _truth(value)
                negate = 0
                operands.append(value)
                expect_operand = False
            else:
                if not isinstance(item, str):
                    self.fail("expected an operator", item.pos)
                ops.append(item)
                expect_operand = True
        if expect_operand:
            self.fail("missing operand", expr.pos)
        for group in ((".",), ("=", "!=", "<", ">", "<=", ">="), ("&&", "and"), ("||", "or")):
            i = 0
            while i < len(ops):
                if ops[i] in group:
                    operands[i:i + 2] = [_apply(ops[i], operands[i], operands[i + 1])]
                    del ops[i]
                else:
                    i += 1
        return operands[0]

    # ---- ":" commands

    def builtin(self, name: str, pos: int, args: list[_Arg], menu: str, frame: _Frame) -> Any:
        named = {a.key: a for a in args if a.key is not None}
        unnamed = [a for a in args if a.key is None]
        if name == ":if":
            if not unnamed or "do" not in named or set(named) - {"do", "else"} or len(unnamed) > 1:
                self.fail("expected end of command" if set(named) - {"do", "else"} else "missing do={ }",
                          pos if not set(named) - {"do", "else"} else
                          next(a.pos for a in args if a.key not in (None, "do", "else")))
            if _truth(self.value(unnamed[0].value, menu, frame)):
                self.block(named["do"].value, menu, frame)
            elif "else" in named:
                self.block(named["else"].value, menu, frame)
            return None
        if name == ":foreach":
            if len(unnamed) != 1 or set(named) != {"in", "do"}:
                self.fail("expected :foreach var in=array do={ }", pos)
            var = self._name(unnamed[0])
            items = self.value(named["in"].value, menu, frame)
            for item in items if isinstance(items, list) else [items]:
                inner = _Frame(frame)
                inner.vars[var] = item
                self.block(named["do"].value, menu, inner)
            return None
        if name in (":local", ":global", ":set"):
            if not unnamed or named or len(unnamed) > 2:
                self.fail("expected end of command", (named and next(iter(named.values())).pos) or pos)
            var = self._name(unnamed[0])
            value = self.value(unnamed[1].value, menu, frame) if len(unnamed) == 2 else ""
            if name == ":local":
                frame.vars[var] = value
            elif name == ":global":
                self.globals.vars[var] = value
            else:
                holder = frame.lookup(var) or self.globals.lookup(var)
                if holder is None:
                    self.fail(f"no such variable {var}", unnamed[0].pos)
                holder.vars[var] = value
            return None
        if name in (":put", ":error", ":len", ":log"):
            if name == ":log":       # :log info "text"
                if len(unnamed) != 2 or named:
                    self.fail("expected :log topic message", pos)
                self.output.append(str(self.value(unnamed[1].value, menu, frame)))
                return None
            if len(unnamed) != 1 or named:
                self.fail("expected end of command", args[1].pos if len(args) > 1 else pos)
            value = self.value(unnamed[0].value, menu, frame)
            if name == ":put":
                self.output.append(_text(value))
                return None
            if name == ":len":
                return len(value) if isinstance(value, (list, str)) else (0 if value is None else len(_text(value)))
            self.fail(_text(value), pos)
        self.fail(f"bad command name {name[1:]}", pos)

    def _name(self, arg: _Arg) -> str:
        if not isinstance(arg.value, _Lit) or arg.value.quoted or not re.fullmatch(r"[A-Za-z_][\w-]*",
                                                                                   arg.value.text):
            self.fail("expected a variable name", arg.pos)
        return arg.value.text

    # ---- menu commands

    def menu_command(self, path: str, verb: str, pos: int, args: list[_Arg], frame: _Frame) -> Any:
        from .routeros import Trap
        menu = self.menus.get(path)
        if menu is None or (_READ.get(verb, verb) not in menu.verbs):
            self.fail(f"bad command name {verb}", pos)
        named: dict[str, Any] = {}
        unnamed: list[tuple[_Arg, Any]] = []
        for arg in args:
            value = self.value(arg.value, path, frame)
            if arg.key is None:
                unnamed.append((arg, value))
            else:
                if arg.key in named:
                    self.fail("expected end of command", arg.pos)
                named[arg.key] = (arg, value)
        sim = self.sim
        try:
            with sim._lock:
                if verb == "find":
                    return self.find(path, menu, named, unnamed)
                if verb == "print":
                    for arg, _ in unnamed:
                        self.fail("expected end of command", arg.pos)
                    self.output.extend(" ".join(f"{k}={v}" for k, v in row.items()) for row in sim.rows(path))
                    return None
                if verb == "get":
                    return self.get(path, menu, named, unnamed, pos)
                values = self.values(menu, named)
                if verb == "add":
                    for arg, _ in unnamed:
                        self.fail("expected end of command", arg.pos)
                    return sim._add(path, menu, values)
                ids = self.items(path, menu, unnamed, pos, required=not menu.single)
                if verb == "set":
                    sim._set(path, menu, {**values, **({".id": ",".join(ids)} if ids else {})})
                elif verb == "remove":
                    if named:
                        self.fail("expected end of command", next(iter(named.values()))[0].pos)
                    if ids:
                        sim._remove(path, ",".join(ids))
                else:
                    self.fail(f"bad command name {verb}", pos)
                return None
        except Trap as exc:
            self.fail(str(exc), pos)

    def values(self, menu: "Menu", named: dict[str, tuple[_Arg, Any]]) -> dict[str, str]:
        from .routeros import Trap
        out = {}
        for key, (arg, value) in named.items():
            if key not in menu.writable:
                self.fail("expected end of command", arg.pos)
            try:
                self.sim._checked(menu, {key: _text(value)})
            except Trap as exc:
                # a parameter this router's version does not have reads as any unknown one
                self.fail("expected end of command" if str(exc).startswith("unknown parameter") else str(exc),
                          arg.pos)
            out[key] = _text(value)
        return out

    def items(self, path: str, menu: "Menu", unnamed: list[tuple[_Arg, Any]], pos: int,
              required: bool) -> list[str]:
        """The ids an unnamed parameter names: ids, arrays of ids (from ``find``), or names."""
        if menu.single:
            for arg, _ in unnamed:
                self.fail("expected end of command", arg.pos)
            return []
        if len(unnamed) != 1:
            if unnamed:
                self.fail("expected end of command", unnamed[1][0].pos)
            if required:
                self.fail("missing value(s) of argument(s) numbers", pos)
            return []
        arg, value = unnamed[0]
        table = self.sim._tables[path]
        out = []
        for item in value if isinstance(value, list) else [v for v in _text(value).split(",") if v]:
            if item in table:
                out.append(item)
                continue
            named = [i for i, row in table.items() if row.get("name") == item]
            if not named:
                self.fail("no such item", arg.pos)
            out.extend(named)
        return out

    def find(self, path: str, menu: "Menu", named: dict, unnamed: list) -> list[str]:
        for arg, _ in unnamed:
            self.fail("expected end of command", arg.pos)
        wanted = {}
        for key, (arg, value) in named.items():
            if key not in menu.fields:
                self.fail("expected end of command", arg.pos)
            wanted[key] = _text(value)
        from .routeros import _same
        rows = {i: self.sim._render(path, i, row) for i, row in self.sim._tables[path].items()}
        return [i for i, row in rows.items() if all(k in row and _same(row[k], v) for k, v in wanted.items())]

    def get(self, path: str, menu: "Menu", named: dict, unnamed: list, pos: int) -> str:
        if named:
            self.fail("expected end of command", next(iter(named.values()))[0].pos)
        if menu.single:
            if len(unnamed) != 1:
                self.fail("missing value(s) of argument(s) value-name", pos)
            ids, field_arg = [""], unnamed[0]
        else:
            if len(unnamed) != 2:
                self.fail("missing value(s) of argument(s) number value-name", pos)
            ids, field_arg = self.items(path, menu, unnamed[:1], pos, required=True), unnamed[1]
            if len(ids) != 1:
                self.fail("no such item" if not ids else "invalid internal item number", unnamed[0][0].pos)
        key = _text(field_arg[1])
        row = self.sim._render(path, ids[0], self.sim._tables[path][ids[0]])
        if key not in menu.fields:
            self.fail("expected end of command", field_arg[0].pos)
        return row.get(key, "")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ";".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value in ("true", "yes")
    return bool(value)


def _num(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


def _apply(op: str, left: Any, right: Any) -> Any:
    if op == ".":
        return _text(left) + _text(right)
    if op in ("&&", "and"):
        return _truth(left) and _truth(right)
    if op in ("||", "or"):
        return _truth(left) or _truth(right)
    a, b = _num(left), _num(right)
    if a is None or b is None:
        a, b = _text(left), _text(right)
    return {"=": a == b, "!=": a != b, "<": a < b, ">": a > b, "<=": a <= b, ">=": a >= b}[op]


def run_script(sim: "RouterOSSimulator", text: str) -> list[str]:
    """Run ``text`` as the router's console runs a pasted script or an ``/import``; returns what it
    ``:put`` (and ``:log``, ``print``). Raises :class:`ScriptError` at the first line the console
    refuses; what ran before it stays done, as on the router."""
    return _Runner(sim, text).run()
