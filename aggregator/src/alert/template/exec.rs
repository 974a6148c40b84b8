//! Execution: walks the tree with the dot, the variables in scope and the `define`d
//! templates, Go's way (`with` and `range` move the dot; variables live until the `end` of the
//! structure declaring them; `template` runs a definition with a new dot and `$`).

use std::collections::HashMap;

use telltale_common::model::Labels;

use super::parse::{Arg, Command, Node, Pipe, Site};
use super::{Data, V, call};

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
}

impl From<String> for Fail {
    fn from(msg: String) -> Fail {
        Fail { msg, at: None }
    }
}

impl From<&str> for Fail {
    fn from(msg: &str) -> Fail {
        Fail {
            msg: msg.to_string(),
            at: None,
        }
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
                        out.push_str(&v.text());
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
                Node::Template(name, p) => {
                    let body = self
                        .defines
                        .get(name)
                        .ok_or_else(|| format!("no such template {name:?}"))?;
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
                    r?;
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
            other => return Err(format!("range can't iterate over {}", other.text()).into()),
        };
        if items.is_empty() {
            self.nodes(els, dot, out)?;
            return Ok(());
        }
        let mark = self.vars.len();
        for (k, e) in items {
            self.vars.truncate(mark);
            match p.decl.as_slice() {
                [] => {}
                [v] => self.declare(v, e.clone(), p.assign)?,
                [i, v, ..] => {
                    self.declare(i, k, p.assign)?;
                    self.declare(v, e.clone(), p.assign)?;
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
                .ok_or_else(|| format!("undefined variable {name:?}"))?;
            slot.1 = v;
        } else {
            self.vars.push((name.to_string(), v));
        }
        Ok(())
    }

    fn pipe(&mut self, p: &Pipe, dot: &V) -> Result<V, Fail> {
        let mut prev: Option<V> = None;
        for c in &p.cmds {
            prev = Some(match c {
                Command::Arg(a, site) => self.arg(a, dot).map_err(|e| e.at(site))?,
                Command::Call(f, args, site) => {
                    // Go checks the count first, at the function's name.
                    f.check_arity(args.len(), prev.is_some())
                        .map_err(|m| Fail {
                            msg: m,
                            at: Some((site.pos, f.signature().0.to_string())),
                        })?;
                    let mut vals = Vec::with_capacity(args.len() + 1);
                    for a in args {
                        vals.push(self.arg(a, dot).map_err(|e| e.at(site))?);
                    }
                    if let Some(p) = prev.take() {
                        vals.push(p);
                    }
                    call(*f, &vals, self).map_err(|m| Fail {
                        msg: format!("error calling {}: {m}", f.signature().0),
                        at: Some((site.pos, site.text.clone())),
                    })?
                }
            });
        }
        let v = prev.ok_or("empty pipeline")?;
        if let [name] = p.decl.as_slice() {
            self.declare(name, v.clone(), p.assign)?;
        }
        Ok(v)
    }

    fn arg(&mut self, a: &Arg, dot: &V) -> Result<V, Fail> {
        match a {
            Arg::Dot(f) => Ok(self.fields(dot.clone(), f)?),
            Arg::Var(name, f) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| format!("undefined variable {name:?}"))?;
                Ok(self.fields(v, f)?)
            }
            Arg::Str(s) => Ok(V::Str(s.clone())),
            Arg::Num(n) => Ok(V::Num(*n)),
            Arg::Int(n) => Ok(V::Int(*n)),
            Arg::Bool(b) => Ok(V::Bool(*b)),
            Arg::Nil => Ok(V::Nil),
            Arg::Pipe(p, f) => {
                let v = self.pipe(p, dot)?;
                Ok(self.fields(v, f)?)
            }
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

/// A query's result as template values: each sample with `.Labels` and `.Value`.
pub(super) fn samples(result: Vec<(Labels, f64)>) -> V {
    V::List(result.into_iter().map(|(l, v)| V::Sample(l, v)).collect())
}
