//! Execution: walks the tree with the dot, the variables in scope and the `define`d
//! templates, Go's way (`with` and `range` move the dot; variables live until the `end` of the
//! structure declaring them; `template` runs a definition with a new dot and `$`).

use std::collections::HashMap;

use telltale_common::model::Labels;

use super::parse::{Arg, Command, Node, Pipe, Site};
use super::{Data, Func, V, call};

/// How deep `template` may call itself (Go stops runaway recursion too).
const MAX_DEPTH: usize = 100;

/// How many `query` calls one rendering may make.
pub(super) const MAX_QUERIES: usize = 20;

/// Why a rendering stopped (Go's message) and, where Go names one, the command it stopped
/// at: its byte offset in the source and its text (`<error expanding template: …>` then
/// reads as Prometheus' does).
#[derive(Debug)]
pub(super) struct Fail {
    pub msg: String,
    pub at: Option<(usize, String)>,
    /// The `define`d template it failed in (Go names it in `executing "…"`).
    pub within: Option<String>,
}

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail {
            msg,
            at: None,
            within: None,
        }
    }
}

impl From<&str> for Fail {
    fn from(msg: &str) -> Fail {
        Fail::from(msg.to_string())
    }
}

impl Fail {
    /// Located at `site` unless already located deeper.
    fn at(mut self, site: &Site) -> Fail {
        if self.at.is_none() {
            self.at = Some((site.pos, site.text.clone()));
        }
        self
    }
}

/// Control flow out of a list of nodes.
enum Flow {
    Next,
    Break,
    Continue,
}

pub(super) struct Exec<'a, 'd> {
    pub data: Data<'d>,
    pub defines: &'a HashMap<String, Vec<Node>>,
    vars: Vec<(String, V)>,
    depth: usize,
    pub queries: usize,
}

impl<'a, 'd> Exec<'a, 'd> {
    pub fn new(data: Data<'d>, defines: &'a HashMap<String, Vec<Node>>) -> Exec<'a, 'd> {
        let vars = vec![
            ("$".to_string(), V::Data),
            ("$labels".to_string(), V::Map(data.labels.clone())),
            ("$value".to_string(), V::Num(data.value)),
            ("$externalLabels".to_string(), V::Map(data.external.clone())),
            (
                "$externalURL".to_string(),
                V::Str(data.external_url.to_string()),
            ),
        ];
        Exec {
            data,
            defines,
            vars,
            depth: 0,
            queries: 0,
        }
    }

    pub fn render(&mut self, nodes: &[Node], dot: &V, out: &mut String) -> Result<(), Fail> {
        self.nodes(nodes, dot, out).map(|_| ())
    }

    fn nodes(&mut self, nodes: &[Node], dot: &V, out: &mut String) -> Result<Flow, Fail> {
        for n in nodes {
            match n {
                Node::Text(t) => out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipe(p, dot)?;
                    if p.decl.is_empty() {
                        out.push_str(&self.show(&v));
                    }
                }
                Node::If(c, then, els) | Node::With(c, then, els) => {
                    let mark = self.vars.len();
                    let v = self.pipe(c, dot)?;
                    let flow = match (v.truthy(), n) {
                        (true, Node::With(..)) => self.nodes(then, &v, out)?,
                        (true, _) => self.nodes(then, dot, out)?,
                        (false, _) => self.nodes(els, dot, out)?,
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Next) {
                        return Ok(flow);
                    }
                }
                Node::Range(p, body, els) => {
                    let mark = self.vars.len();
                    let flow = self.range(p, body, els, dot, out);
                    self.vars.truncate(mark);
                    flow?;
                }
                Node::Template(name, p, site) => {
                    let body = self.defines.get(name).ok_or_else(|| Fail {
                        msg: format!("template {} not defined", super::gofmt::quote(name, false)),
                        at: Some((site.pos, site.text.clone())),
                        within: None,
                    })?;
                    let v = match p {
                        Some(p) => self.pipe(p, dot)?,
                        None => V::Nil,
                    };
                    if self.depth >= MAX_DEPTH {
                        return Err(format!("template {name:?}: exceeded maximum depth").into());
                    }
                    // A definition sees only `$`, set to the dot it is given.
                    let saved =
                        std::mem::replace(&mut self.vars, vec![("$".to_string(), v.clone())]);
                    self.depth += 1;
                    let r = self.nodes(body, &v, out);
                    self.depth -= 1;
                    self.vars = saved;
                    r.map_err(|mut e| {
                        e.within.get_or_insert_with(|| name.clone());
                        e
                    })?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Next)
    }

    fn range(
        &mut self,
        p: &Pipe,
        body: &[Node],
        els: &[Node],
        dot: &V,
        out: &mut String,
    ) -> Result<(), Fail> {
        // The pipeline's value, without declaring: the variables take each element.
        let plain = Pipe {
            decl: Vec::new(),
            assign: false,
            cmds: p.cmds.clone(),
        };
        let v = self.pipe(&plain, dot)?;
        let items: Vec<(V, V)> = match v {
            V::List(l) => l
                .into_iter()
                .enumerate()
                .map(|(i, e)| (V::Int(i as i64), e))
                .collect(),
            // Go ranges over a map in key order.
            V::Map(m) => m
                .iter()
                .map(|(k, v)| (V::Str(k.to_string()), V::Str(v.to_string())))
                .collect(),
            V::Int(n) if n >= 0 => (0..n).map(|i| (V::Int(i), V::Int(i))).collect(),
            V::Nil => Vec::new(),
            other => {
                // Go stands at the pipeline's last node.
                return Err(Fail {
                    msg: format!("range can't iterate over {}", self.show(&other)),
                    at: p.cmds.last().map(Command::last_node),
                    within: None,
                });
            }
        };
        if items.is_empty() {
            self.nodes(els, dot, out)?;
            return Ok(());
        }
        let mark = self.vars.len();
        // Setting the loop's variables fails where Go last stood: the pipeline's last command.
        let place = p.cmds.last().map(Command::last_node);
        let placed = |m: String| Fail {
            msg: m,
            at: place.clone(),
            within: None,
        };
        for (k, e) in items {
            self.vars.truncate(mark);
            match p.decl.as_slice() {
                [] => {}
                [v] => self.declare(v, e.clone(), p.assign).map_err(placed)?,
                [i, v, ..] => {
                    self.declare(i, k, p.assign).map_err(placed)?;
                    self.declare(v, e.clone(), p.assign).map_err(placed)?;
                }
            }
            match self.nodes(body, &e, out)? {
                Flow::Break => break,
                Flow::Next | Flow::Continue => {}
            }
        }
        Ok(())
    }

    fn declare(&mut self, name: &str, v: V, assign: bool) -> Result<(), String> {
        if assign {
            let slot = self
                .vars
                .iter_mut()
                .rev()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("undefined variable: {name}"))?;
            slot.1 = v;
        } else {
            self.vars.push((name.to_string(), v));
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &V) -> Result<V, Fail> {
        let mut prev: Option<V> = None;
        let mut prev_node: Option<(usize, String)> = None;
        for c in &p.cmds {
            prev = Some(match c {
                Command::Arg(Arg::Nil, site) => {
                    return Err(Fail {
                        msg: "nil is not a command".into(),
                        at: Some((site.pos, site.text.clone())),
                        within: None,
                    });
                }
                Command::Arg(a, site) => {
                    // A value piped into what is not a function: Go's error for an argument.
                    if prev.is_some() {
                        let mut e = self.not_a_function(a, site, dot);
                        // A parenthesised pipeline: Go still stands where the stage before
                        // left it.
                        if matches!(a, Arg::Pipe(_, f) if f.is_empty()) {
                            e.at = prev_node.clone().or(e.at);
                        }
                        return Err(e);
                    }
                    self.arg(a, dot).map_err(|e| e.at(site))?
                }
                Command::NotAFunction(first, _, at) => {
                    return Err(self.not_a_function(first, at, dot));
                }
                Command::Call(f, args, site) => {
                    // Go checks the count first, at the function's name.
                    f.check_arity(args.len(), prev.is_some())
                        .map_err(|m| Fail {
                            msg: m,
                            at: Some((site.pos, f.signature().0.to_string())),
                            within: None,
                        })?;
                    // Go's and/or stop at the first argument that decides.
                    if matches!(f, Func::And | Func::Or) {
                        let mut v = V::Nil;
                        for a in args {
                            v = self.arg(a, dot).map_err(|e| e.at(site))?;
                            if v.truthy() == matches!(f, Func::Or) {
                                break;
                            }
                        }
                        let decided = !args.is_empty() && v.truthy() == matches!(f, Func::Or);
                        if let (false, Some(p)) = (decided, prev.take()) {
                            v = p;
                        }
                        v
                    } else {
                        let mut vals = Vec::with_capacity(args.len() + 1);
                        for (k, a) in args.iter().enumerate() {
                            let node = site.args.get(k).cloned().unwrap_or_default();
                            let v = self.arg(a, dot).map_err(|e| e.at(site))?;
                            check_type(*f, k, a, &v, &node)?;
                            vals.push(v);
                        }
                        if let Some(p) = prev.take() {
                            // The piped value is checked where Go last stood: the command's
                            // last argument, else its function's name.
                            let computed = Arg::Dot(Vec::new(), Site::default());
                            check_type(*f, args.len(), &computed, &p, &site.last)?;
                            vals.push(p);
                        }
                        call(*f, &vals, self).map_err(|m| Fail {
                            msg: format!("error calling {}: {m}", f.signature().0),
                            at: Some((site.pos, site.text.clone())),
                            within: None,
                        })?
                    }
                }
            });
            prev_node = Some(c.last_node());
        }
        let v = prev.ok_or("empty pipeline")?;
        if let [name] = p.decl.as_slice() {
            // Go stands at the pipeline's last command when it sets the variable.
            self.declare(name, v.clone(), p.assign).map_err(|m| Fail {
                msg: m,
                at: p.cmds.last().map(Command::last_node),
                within: None,
            })?;
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &V) -> Result<V, Fail> {
        match a {
            Arg::Dot(f, site) => self.fields(dot.clone(), f).map_err(|m| Fail {
                msg: m,
                at: Some((site.pos, site.text.clone())),
                within: None,
            }),
            Arg::Var(name, f, site) => {
                let v = self.var(name).ok_or_else(|| Fail {
                    msg: format!("undefined variable: {name}"),
                    at: Some((site.pos, site.text.clone())),
                    within: None,
                })?;
                self.fields(v, f).map_err(|m| Fail {
                    msg: m,
                    at: Some((site.pos, site.text.clone())),
                    within: None,
                })
            }
            Arg::Str(s) => Ok(V::Str(s.clone())),
            Arg::Imag(s) => Ok(V::Complex(s.clone())),
            Arg::Num(n) => Ok(V::Num(*n)),
            Arg::Int(n) => Ok(V::Int(*n)),
            Arg::Bool(b) => Ok(V::Bool(*b)),
            Arg::Nil => Ok(V::Nil),
            Arg::Pipe(p, f) => {
                let v = self.pipe(p, dot)?;
                // A field of `( … )` fails where Go last stood: the pipeline's last command.
                self.fields(v, f).map_err(|m| Fail {
                    msg: m,
                    at: p.cmds.last().map(Command::last_node),
                    within: None,
                })
            }
            Arg::Func(f, pos, fields) => {
                let name = f.signature().0;
                f.check_arity(0, false).map_err(|m| Fail {
                    msg: m,
                    at: Some((*pos, name.to_string())),
                    within: None,
                })?;
                // Located at the command holding it, as Go's evalCall does.
                let v = call(*f, &[], self).map_err(|m| format!("error calling {name}: {m}"))?;
                // Go stands at the function's name when its fields fail.
                self.fields(v, fields).map_err(|m| Fail {
                    msg: m,
                    at: Some((*pos, name.to_string())),
                    within: None,
                })
            }
        }
    }

    /// Go's error for arguments after a non-function: a field chain is evaluated up to its
    /// last field first (and fails as Go's does), then a map's or the data's field is "not
    /// a method"/"cannot be invoked"; anything else is "not a function".
    fn not_a_function(&mut self, first: &Arg, at: &Site, dot: &V) -> Fail {
        let located = |msg: String, at: (usize, String)| Fail {
            msg,
            at: Some(at),
            within: None,
        };
        let (owner, fields, place) = match first {
            Arg::Dot(f, s) if !f.is_empty() => (Ok(dot.clone()), f, (s.pos, s.text.clone())),
            Arg::Var(name, f, s) if !f.is_empty() => {
                let v = self.var(name).ok_or_else(|| {
                    located(
                        format!("undefined variable: {name}"),
                        (s.pos, s.text.clone()),
                    )
                });
                (v, f, (s.pos, s.text.clone()))
            }
            Arg::Pipe(p, f) if !f.is_empty() => {
                let place = p
                    .cmds
                    .last()
                    .map_or((at.pos, at.text.clone()), Command::last_node);
                (self.pipe(p, dot), f, place)
            }
            // A function with fields (`eq.Labels`), or a variable: evaluated first.
            Arg::Func(..) | Arg::Var(..) => {
                if let Err(e) = self.arg(first, dot) {
                    return e;
                }
                return located(
                    format!("can't give argument to non-function {}", at.text),
                    (at.pos, at.text.clone()),
                );
            }
            // A parenthesised pipeline: Go names it without its parentheses.
            Arg::Pipe(p, _) => {
                return located(
                    format!(
                        "can't give argument to non-function {}",
                        super::parse::pipe_text(p)
                    ),
                    (at.pos, at.text.clone()),
                );
            }
            _ => {
                return located(
                    format!("can't give argument to non-function {}", at.text),
                    (at.pos, at.text.clone()),
                );
            }
        };
        let owner = match owner {
            Ok(v) => v,
            Err(e) => return e,
        };
        let (init, last) = fields.split_at(fields.len() - 1);
        let owner = match self.fields(owner, init) {
            Ok(v) => v,
            Err(m) => return located(m, place),
        };
        let name = &last[0];
        let msg = match owner {
            V::Data | V::Sample(..) => match self.fields(owner, last) {
                Err(m) => m,
                Ok(_) => format!("{name} has arguments but cannot be invoked as function"),
            },
            V::Map(_) => format!("{name} is not a method but has arguments"),
            other => match self.fields(other, last) {
                Err(m) => m,
                Ok(_) => format!("{name} is not a method but has arguments"),
            },
        };
        located(msg, place)
    }

    /// The innermost variable `name` in scope.
    fn var(&self, name: &str) -> Option<V> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// A value as Go prints it; the data as Prometheus' struct: `{labels external url value}`.
    pub(super) fn show(&self, v: &V) -> String {
        match v {
            V::Data => format!(
                "{{{} {} {} {}}}",
                V::Map(self.data.labels.clone()).text(),
                V::Map(self.data.external.clone()).text(),
                self.data.external_url,
                V::Num(self.data.value).text()
            ),
            other => other.text(),
        }
    }

    /// `.A.B` on a value: the template's data, a query sample, or a label map.
    fn fields(&self, mut v: V, fields: &[String]) -> Result<V, String> {
        for f in fields {
            v = match (&v, f.as_str()) {
                (V::Data, "Labels") => V::Map(self.data.labels.clone()),
                (V::Data, "Value") => V::Num(self.data.value),
                (V::Data, "ExternalLabels") => V::Map(self.data.external.clone()),
                (V::Data, "ExternalURL") => V::Str(self.data.external_url.to_string()),
                (V::Sample(l, _), "Labels") => V::Map(l.clone()),
                (V::Sample(_, x), "Value") => V::Num(*x),
                // A missing key is the zero value, as for Go's map[string]string.
                (V::Map(m), k) => V::Str(m.get(k).unwrap_or("").to_string()),
                (other, k) => {
                    return Err(format!("can't evaluate field {k} in type {}", other.kind()));
                }
            };
        }
        Ok(v)
    }
}

/// Go's type check of argument `k` of `f` (`a` as written, `v` its value) before the call:
/// a literal of the wrong kind is "expected string; found 1", a computed value "wrong type
/// for value; expected string; got float64". Placed at the argument's node.
fn check_type(f: Func, k: usize, a: &Arg, v: &V, node: &(usize, String)) -> Result<(), Fail> {
    let Some(want) = f.param(k) else {
        return Ok(());
    };
    // A literal fits by its kind as written (a string for a string; nil for the rest); a
    // computed value by its type.
    let literal = matches!(
        a,
        Arg::Str(_) | Arg::Imag(_) | Arg::Num(_) | Arg::Int(_) | Arg::Bool(_) | Arg::Nil
    );
    let fits = if literal {
        match want {
            "string" => matches!(a, Arg::Str(_)),
            _ => matches!(a, Arg::Nil),
        }
    } else {
        match want {
            "string" => matches!(v, V::Str(_)),
            "template.queryResult" => matches!(v, V::List(_) | V::Nil),
            _ => matches!(v, V::Sample(..) | V::Nil),
        }
    };
    if fits {
        return Ok(());
    }
    let text = &node.1;
    let msg = match a {
        Arg::Nil if want == "string" => format!("cannot assign nil to {want}"),
        Arg::Imag(_) | Arg::Num(_) | Arg::Int(_) | Arg::Bool(_) if want == "string" => {
            format!("expected string; found {text}")
        }
        Arg::Str(_) | Arg::Imag(_) | Arg::Num(_) | Arg::Int(_) | Arg::Bool(_) => {
            format!("can't handle {text} for arg of type {want}")
        }
        _ => format!("wrong type for value; expected {want}; got {}", v.kind()),
    };
    Err(Fail {
        msg,
        at: Some(node.clone()),
        within: None,
    })
}

/// A query's result as template values: each sample with `.Labels` and `.Value`.
pub(super) fn samples(result: Vec<(Labels, f64)>) -> V {
    V::List(result.into_iter().map(|(l, v)| V::Sample(l, v)).collect())
}
