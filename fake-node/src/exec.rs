//! Command execution: the command tree, group dispatch, argument fitting, overloads,
//! rights, execution contexts and the complexity budget.
//!
//! Owns: the semantics of TS3AudioBot's `CommandGroup`, `FunctionCommand`,
//! `OverloadedFunctionCommand` and `BotCommand` (exact case-sensitive lookup, AmbiguousCall
//! listing, "Need at least N arguments", overload order and lazy argument reuse, one
//! complexity token per function tried, rights before arguments, MissingContext with its
//! help texts) and the anonymous rights sets.
//! Does not own: result/error types and .NET conversions (`value`), what each command does
//! (`commands`, `corecmds`, `botcmds`), the parser (`parser`), or HTTP I/O.

use std::sync::OnceLock;
use std::time::Instant;

use crate::commands::{Def, DEFS};
use crate::parser::{self, Node, Syntax};
use crate::state::NodeState;
use crate::AnonymousRights;

use crate::value::{
    could_not_convert, parse_seek_time, to_integer, HELP_BOT_CONTEXT, LINK_BOT_CONTEXT,
};
pub use crate::value::{render, Answer, Fail, Reason, Val};

/// Execution modules that may be missing (the ones that matter for MissingContext).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dep {
    Bot,
    Player,
    PlayManager,
    Ts3Client,
    IVoiceTarget,
    ConfBot,
    PlaylistManager,
    ResolveContext,
    Connection,
    ClientCall,
    UserSession,
}

impl Dep {
    fn missing(self, method: &str) -> Fail {
        let mut f = Fail::new(
            Reason::MissingContext,
            format!("Command '{method}' missing execution context '{self:?}'"),
        );
        match self {
            Dep::Bot
            | Dep::Player
            | Dep::PlayManager
            | Dep::Ts3Client
            | Dep::IVoiceTarget
            | Dep::ConfBot => {
                f.help_message = Some(HELP_BOT_CONTEXT);
                f.help_link = Some(LINK_BOT_CONTEXT);
            }
            Dep::ClientCall => f.help_message = Some("This command is not available as API."),
            Dep::UserSession => {
                f.help_message =
                    Some("Creating UserSessions via api is currently not implemented yet.")
            }
            _ => {}
        }
        f
    }
}

/// A parameter's kind. `Opt*` and arrays are optional; the rest count as required.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum P {
    Str,
    OptStr,
    Int,
    OptInt,
    UInt,
    UShort,
    ULong,
    OptULong,
    OptDouble,
    Time,
    DateTime,
    /// An enum by its .NET type name and member names.
    Enum(&'static str, &'static [&'static str]),
    /// `IAudioResourceResult`: never convertible from text.
    Audio,
    Cmd,
    OptCmd,
    StrArr,
    ULongArr,
    /// `IReadOnlyList<ICommand>`: all arguments, unevaluated; not a normal parameter.
    Raw,
}

impl P {
    fn required(self) -> bool {
        !matches!(
            self,
            P::OptStr
                | P::OptInt
                | P::OptULong
                | P::OptDouble
                | P::OptCmd
                | P::StrArr
                | P::ULongArr
                | P::Raw
        )
    }
}

/// A fitted parameter value.
#[derive(Debug)]
pub enum Pv<'n> {
    None,
    Str(String),
    Int(i64),
    F64(f64),
    Cmd(&'n Node),
    Strs(Vec<String>),
    Ints(Vec<i64>),
    Raw(Vec<&'n Node>),
}

impl<'n> Pv<'n> {
    pub fn str(&self) -> Option<&str> {
        match self {
            Pv::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self) -> Option<i64> {
        match self {
            Pv::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn f64(&self) -> Option<f64> {
        match self {
            Pv::F64(f) => Some(*f),
            _ => None,
        }
    }
    pub fn cmd(&self) -> Option<&'n Node> {
        match self {
            Pv::Cmd(n) => Some(n),
            _ => None,
        }
    }
    pub fn strs(&self) -> &[String] {
        match self {
            Pv::Strs(v) => v,
            _ => &[],
        }
    }
    pub fn ints(&self) -> &[i64] {
        match self {
            Pv::Ints(v) => v,
            _ => &[],
        }
    }
    pub fn raw(&self) -> &[&'n Node] {
        match self {
            Pv::Raw(v) => v,
            _ => &[],
        }
    }
}

/// A node of the command tree.
pub enum TNode {
    Group(Group),
    Func(usize),
    Over(Vec<usize>),
}

/// A command group: children in registration order (`""` is the group's own function).
#[derive(Default)]
pub struct Group {
    pub children: Vec<(&'static str, TNode)>,
}

impl Group {
    fn get_mut(&mut self, key: &str) -> Option<&mut TNode> {
        self.children
            .iter_mut()
            .find(|(k, _)| *k == key)
            .map(|(_, n)| n)
    }

    /// "The command contains the following subfunctions: a, b, c" (the empty key left out).
    pub fn subfunctions(&self) -> Fail {
        let names: Vec<&str> = self
            .children
            .iter()
            .map(|(k, _)| *k)
            .filter(|k| !k.is_empty())
            .collect();
        Fail::new(
            Reason::AmbiguousCall,
            format!(
                "The command contains the following subfunctions: {}",
                names.join(", ")
            ),
        )
    }
}

/// The tree and the rights every command requires, built once.
pub struct Tree {
    pub root: Group,
    pub rights: Vec<String>,
}

/// Builds the tree the way `CommandManager.LoadCommand` does, so group order and the `""`
/// entries match TS3AudioBot's.
pub fn tree() -> &'static Tree {
    static TREE: OnceLock<Tree> = OnceLock::new();
    TREE.get_or_init(|| {
        let mut root = Group::default();
        for (i, def) in DEFS.iter().enumerate() {
            insert(&mut root, def.path, i);
        }
        let rights = DEFS
            .iter()
            .map(|d| format!("cmd.{}", d.path.replace(' ', ".")))
            .collect();
        Tree { root, rights }
    })
}

fn insert(root: &mut Group, path: &'static str, idx: usize) {
    let words: Vec<&'static str> = path.split(' ').collect();
    let Some((last, dirs)) = words.split_last() else {
        return;
    };
    let mut group = root;
    for w in dirs {
        if group.get_mut(w).is_none() {
            group.children.push((w, TNode::Group(Group::default())));
        }
        let Some(node) = group.get_mut(w) else { return };
        if let TNode::Func(f) = node {
            // A function that gains subcommands becomes the group's "" entry, in place.
            let f = *f;
            *node = TNode::Group(Group {
                children: vec![("", TNode::Func(f))],
            });
        }
        match node {
            TNode::Group(g) => group = g,
            _ => return,
        }
    }
    match group.get_mut(last) {
        None => group.children.push((last, TNode::Func(idx))),
        Some(TNode::Group(g)) => g.children.push(("", TNode::Func(idx))),
        Some(node @ TNode::Func(_)) => {
            if let TNode::Func(f) = node {
                *node = TNode::Over(vec![*f, idx]);
            }
        }
        Some(TNode::Over(v)) => v.push(idx),
    }
}

/// Every right a command can require plus the two extra ones.
pub fn registered_rights() -> impl Iterator<Item = &'static str> {
    tree()
        .rights
        .iter()
        .map(String::as_str)
        .chain(["ts3ab.admin.volume", "ts3ab.admin.list"])
}

/// The default rights.toml root `"+"` (what anonymous callers hold with `Default`).
const DEFAULT_GRANTS: &[&str] = &[
    "cmd.help.*",
    "cmd.pm",
    "cmd.subscribe",
    "cmd.unsubscribe",
    "cmd.kickme.*",
    "cmd.version",
    "cmd.song",
    "cmd.repeat",
    "cmd.random",
    "cmd.if",
    "cmd.print",
    "cmd.rng",
    "cmd.eval",
    "cmd.take",
    "cmd.xecute",
    "cmd.getmy.*",
    "cmd.json.*",
    "cmd.bot.use",
    "cmd.rights.can",
];

/// Who is calling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// An authenticated API user: every right.
    User,
    Anonymous(AnonymousRights),
}

impl Caller {
    /// Whether the caller holds a (registered) right. A `prefix.*` grant covers every right
    /// starting with `prefix` (TS3AudioBot's `ExpandRights` drops the dot).
    pub fn has(self, right: &str) -> bool {
        match self {
            Caller::User | Caller::Anonymous(AnonymousRights::All) => true,
            Caller::Anonymous(AnonymousRights::None) => false,
            Caller::Anonymous(AnonymousRights::Default) => {
                DEFAULT_GRANTS.iter().any(|g| match g.strip_suffix(".*") {
                    Some(prefix) => right.starts_with(prefix),
                    None => *g == right,
                })
            }
        }
    }
}

/// Side effects that happen after the answer is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    Quit,
}

/// Arguments with TS3AudioBot's `LazyCommand` caching (each evaluated at most once, even
/// across overloads).
pub struct Args<'a, 'n> {
    pub nodes: &'a [&'n Node],
    cache: Vec<Option<Val>>,
}

impl<'a, 'n> Args<'a, 'n> {
    pub fn new(nodes: &'a [&'n Node]) -> Self {
        Args {
            nodes,
            cache: vec![None; nodes.len()],
        }
    }

    fn eval(&mut self, ex: &mut Exec<'_>, i: usize) -> Result<Val, Fail> {
        if let Some(v) = &self.cache[i] {
            return Ok(v.clone());
        }
        let v = ex.exec_node(self.nodes[i], &[])?;
        self.cache[i] = Some(v.clone());
        Ok(v)
    }
}

/// One request's execution.
pub struct Exec<'s> {
    pub st: &'s mut NodeState,
    pub caller: Caller,
    pub now: Instant,
    /// The bot whose context commands run in (`bot use`), if any.
    pub bot: Option<u32>,
    pub effects: Vec<Effect>,
    complexity: u32,
    limit: u32,
    depth: u32,
}

/// Nesting beyond this would overflow a .NET stack too; answered as an internal error.
const MAX_DEPTH: u32 = 1000;

impl<'s> Exec<'s> {
    pub fn new(st: &'s mut NodeState, caller: Caller, now: Instant) -> Exec<'s> {
        let limit = st.complexity_limit();
        Exec {
            st,
            caller,
            now,
            bot: None,
            effects: Vec::new(),
            complexity: 0,
            limit,
            depth: 0,
        }
    }

    /// Parses and runs an API command text (the target minus `/api`).
    pub fn run_api(&mut self, text: &[u8]) -> Result<Val, Fail> {
        let node = parser::to_node(parser::parse(text, Syntax::Api));
        self.exec_node(&node, &[])
    }

    /// Runs a node with extra arguments appended (what `RootCommand.Execute` does).
    pub fn exec_node(&mut self, node: &Node, extra: &[&Node]) -> Result<Val, Fail> {
        match node {
            Node::Str(s) => Ok(Val::Str(s.clone())),
            Node::Tail { content, tail } => Ok(Val::Tail {
                content: content.clone(),
                tail: tail.clone(),
            }),
            Node::Root(args) => {
                if self.depth >= MAX_DEPTH {
                    return Err(Fail::other(500, "Operation caused a stack overflow."));
                }
                self.depth += 1;
                let all: Vec<&Node> = args.iter().chain(extra.iter().copied()).collect();
                let r = self.exec_group(&tree().root, &all);
                self.depth -= 1;
                r
            }
        }
    }

    /// Runs `f` with `id` as the bot context.
    pub fn in_bot<T>(&mut self, id: u32, f: impl FnOnce(&mut Self) -> T) -> T {
        let back = self.bot.replace(id);
        let r = f(self);
        self.bot = back;
        r
    }

    fn exec_group(&mut self, g: &Group, args: &[&Node]) -> Result<Val, Fail> {
        let name = match args.first() {
            Some(first) => self.exec_node(first, &[])?.to_text(),
            None => String::new(),
        };
        let rest = args.get(1..).unwrap_or(&[]);
        match g.children.iter().find(|(k, _)| *k == name) {
            None => Err(g.subfunctions()),
            Some((_, TNode::Group(sub))) => self.exec_group(sub, rest),
            Some((_, TNode::Func(i))) => self.exec_func(*i, &mut Args::new(rest)),
            Some((_, TNode::Over(list))) => {
                let mut args = Args::new(rest);
                let mut context: Option<Fail> = None;
                for &i in list {
                    match self.exec_func(i, &mut args) {
                        Err(f) if f.reason() == Some(Reason::MissingContext) => context = Some(f),
                        Err(f) if f.reason() == Some(Reason::MissingParameter) => {}
                        other => return other,
                    }
                }
                Err(context.unwrap_or_else(|| {
                    Fail::missing_param("No matching function overload could be found.")
                }))
            }
        }
    }

    fn exec_func(&mut self, idx: usize, args: &mut Args<'_, '_>) -> Result<Val, Fail> {
        let def: &Def = &DEFS[idx];
        if self.complexity + 1 > self.limit {
            return Err(Fail::cmd(
                "The command exceeded the maximum calling complexity.",
            ));
        }
        self.complexity += 1;
        let right = &tree().rights[idx];
        if !self.caller.has(right) {
            let mut f = Fail::new(
                Reason::MissingRights,
                format!(
                    "You cannot execute '{}'. You are missing the '{right}' right!",
                    def.path
                ),
            );
            f.help_link = Some("https://github.com/Splamy/TS3AudioBot/wiki/FAQ#missing-rights");
            return Err(f);
        }
        for dep in def.deps {
            if !self.has_dep(*dep) {
                return Err(dep.missing(def.method));
            }
        }
        let vals = self.fit(def, args)?;
        (def.h)(self, vals)
    }

    fn has_dep(&self, dep: Dep) -> bool {
        match dep {
            Dep::ClientCall | Dep::UserSession => false,
            _ => self.bot.is_some_and(|id| self.st.bot(id).is_some()),
        }
    }

    /// `FunctionCommand.FitArguments`: parameters in order, conversion errors as they come,
    /// then the required-count check.
    fn fit<'n>(&mut self, def: &Def, args: &mut Args<'_, 'n>) -> Result<Vec<Pv<'n>>, Fail> {
        let n = args.nodes.len();
        let mut out = Vec::with_capacity(def.params.len());
        let mut taken = 0;
        for &p in def.params {
            match p {
                P::Raw => out.push(Pv::Raw(args.nodes.to_vec())),
                P::Cmd | P::OptCmd => match args.nodes.get(taken) {
                    Some(c) => {
                        out.push(Pv::Cmd(c));
                        taken += 1;
                    }
                    None => out.push(Pv::None),
                },
                P::StrArr | P::ULongArr => {
                    let mut strs = Vec::new();
                    let mut ints = Vec::new();
                    while taken < n {
                        let v = args.eval(self, taken)?;
                        if p == P::StrArr {
                            strs.push(v.to_text());
                        } else {
                            ints.push(to_integer(&v, "UInt64", 0, i128::from(u64::MAX))? as i64);
                        }
                        taken += 1;
                    }
                    out.push(if p == P::StrArr {
                        Pv::Strs(strs)
                    } else {
                        Pv::Ints(ints)
                    });
                }
                _ if taken >= n => out.push(Pv::None),
                _ => {
                    let v = args.eval(self, taken)?;
                    out.push(convert(&v, p)?);
                    taken += 1;
                }
            }
        }
        let required = def.params.iter().filter(|p| p.required()).count();
        if taken < required {
            return Err(Fail::at_least(required));
        }
        Ok(out)
    }
}

/// `FunctionCommand.ConvertParam` for one value.
fn convert<'n>(v: &Val, p: P) -> Result<Pv<'n>, Fail> {
    if *v == Val::Null {
        return Ok(Pv::None);
    }
    Ok(match p {
        P::Str | P::OptStr => Pv::Str(v.to_text()),
        P::Int | P::OptInt => {
            Pv::Int(to_integer(v, "Int32", i128::from(i32::MIN), i128::from(i32::MAX))? as i64)
        }
        P::UInt => Pv::Int(to_integer(v, "UInt32", 0, i128::from(u32::MAX))? as i64),
        P::UShort => Pv::Int(to_integer(v, "UInt16", 0, i128::from(u16::MAX))? as i64),
        P::ULong | P::OptULong => Pv::Int(to_integer(v, "UInt64", 0, i128::from(u64::MAX))? as i64),
        P::OptDouble => match v.to_text().trim().parse::<f64>() {
            Ok(f) => Pv::F64(f),
            Err(_) => return Err(could_not_convert(v, "Double")),
        },
        P::Time => match parse_seek_time(&v.to_text()) {
            Some(t) => Pv::F64(t),
            None => return Err(could_not_convert(v, "TimeSpan")),
        },
        P::Enum(name, members) => match members.iter().position(|m| *m == v.to_text()) {
            Some(i) => Pv::Int(i as i64),
            None => return Err(could_not_convert(v, name)),
        },
        P::DateTime => return Err(could_not_convert(v, "DateTime")),
        P::Audio => return Err(could_not_convert(v, "IAudioResourceResult")),
        P::Cmd | P::OptCmd | P::StrArr | P::ULongArr | P::Raw => Pv::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_group_lists_every_top_level_command_in_order() {
        let f = tree().root.subfunctions();
        assert!(f.msg.starts_with("The command contains the following subfunctions: add, alias, api, bot, clear, command, data, eval,"));
        assert!(f.msg.ends_with("version, volume, whisper, xecute"));
    }

    #[test]
    fn default_rights_expand_without_the_dot() {
        let c = Caller::Anonymous(AnonymousRights::Default);
        assert!(c.has("cmd.help"));
        assert!(c.has("cmd.help.all"));
        assert!(c.has("cmd.json.merge"));
        assert!(c.has("cmd.bot.use"));
        assert!(!c.has("cmd.bot.list"));
        assert!(!Caller::Anonymous(AnonymousRights::None).has("cmd.version"));
    }
}
