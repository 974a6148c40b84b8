//! The routing tree, with Alertmanager's semantics: an alert enters at the root (which matches
//! everything); at each node the children are tried in order, a matching child is descended
//! into, and the search stops at the first matching child unless it has `continue: true`; a
//! node none of whose children match is itself the match. Settings are inherited from the
//! parent when a node does not set them.

use std::time::Duration;

use telltale_common::model::Labels;

use crate::labels::Matcher;

/// How alerts of a route are grouped.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupBy {
    /// `group_by: ['...']`: every label (one group per alert).
    All,
    /// These labels.
    Labels(Vec<String>),
}

/// One node of the routing tree.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the tree (`0`, `0.1`, `0.1.0`...), part of group keys.
    pub id: String,
    /// Receiver name.
    pub receiver: String,
    /// Grouping.
    pub group_by: GroupBy,
    /// Matchers (all must match).
    pub matchers: Vec<Matcher>,
    /// Keep looking at later siblings after matching.
    pub cont: bool,
    /// Wait before the first notification of a new group.
    pub group_wait: Duration,
    /// Wait between notifications of a group that changed.
    pub group_interval: Duration,
    /// Wait before repeating an unchanged notification.
    pub repeat_interval: Duration,
    /// Time intervals during which notifications are muted.
    pub mute_time_intervals: Vec<String>,
    /// Time intervals outside which notifications are muted (empty: always active).
    pub active_time_intervals: Vec<String>,
    /// Children.
    pub routes: Vec<Route>,
}

impl Route {
    /// The routes an alert with `labels` goes to.
    pub fn matching(&self, labels: &Labels) -> Vec<&Route> {
        if !self.matchers.iter().all(|m| m.matches_labels(labels)) {
            return Vec::new();
        }
        let mut all = Vec::new();
        for c in &self.routes {
            let m = c.matching(labels);
            let matched = !m.is_empty();
            all.extend(m);
            if matched && !c.cont {
                break;
            }
        }
        if all.is_empty() {
            all.push(self);
        }
        all
    }

    /// The labels of `labels` this route groups by.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            GroupBy::All => labels.clone(),
            GroupBy::Labels(names) => Labels::from_pairs(
                names
                    .iter()
                    .filter_map(|n| labels.get(n).map(|v| (n.clone(), v.to_string()))),
            ),
        }
    }

    /// Every node, depth first.
    pub fn walk(&self) -> Vec<&Route> {
        let mut out = vec![self];
        for c in &self.routes {
            out.extend(c.walk());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use crate::alerting::config::RoutingConfig;
    use telltale_common::model::Labels;

    // The example tree of Alertmanager's configuration documentation, reduced.
    const TREE: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  group_wait: 30s
  routes:
    - matchers: ['service=~"foo1|foo2|baz"']
      receiver: team-X
      routes:
        - matchers: [severity="critical"]
          receiver: team-X-pager
    - matchers: [service="files"]
      receiver: team-Y
      group_by: [alertname, cluster]
      continue: true
    - matchers: [owner="team-Y"]
      receiver: team-Y-all
      group_wait: 10s
    - match: {service: database}
      receiver: team-DB
      group_by: ['...']
receivers:
  - name: default
  - name: team-X
  - name: team-X-pager
  - name: team-Y
  - name: team-Y-all
  - name: team-DB
"#;

    fn receivers(labels: &[(&str, &str)]) -> Vec<String> {
        let cfg = RoutingConfig::parse(TREE).expect("parses");
        cfg.route
            .matching(&Labels::from_pairs(labels.iter().copied()))
            .into_iter()
            .map(|r| r.receiver.clone())
            .collect()
    }

    #[test]
    fn routing_follows_alertmanager() {
        assert_eq!(receivers(&[("service", "foo1")]), ["team-X"]);
        assert_eq!(
            receivers(&[("service", "foo2"), ("severity", "critical")]),
            ["team-X-pager"]
        );
        assert_eq!(receivers(&[("service", "nope")]), ["default"]);
        // `continue` lets the next sibling match too.
        assert_eq!(
            receivers(&[("service", "files"), ("owner", "team-Y")]),
            ["team-Y", "team-Y-all"]
        );
        // Without continue on team-Y-all's route, team-DB is not reached.
        assert_eq!(
            receivers(&[("service", "database"), ("owner", "team-Y")]),
            ["team-Y-all"]
        );
        assert_eq!(receivers(&[("service", "database")]), ["team-DB"]);
    }

    #[test]
    fn children_inherit_and_group_by_all() {
        let cfg = RoutingConfig::parse(TREE).expect("parses");
        let l = Labels::from_pairs([("service", "foo1"), ("severity", "critical"), ("x", "1")]);
        let r = cfg.route.matching(&l)[0];
        assert_eq!(
            r.group_wait,
            std::time::Duration::from_secs(30),
            "inherited"
        );
        assert_eq!(r.group_labels(&l), Labels::default(), "no alertname label");
        let db = Labels::from_pairs([("service", "database"), ("a", "b")]);
        assert_eq!(cfg.route.matching(&db)[0].group_labels(&db), db);
        let y = Labels::from_pairs([("owner", "team-Y")]);
        assert_eq!(
            cfg.route.matching(&y)[0].group_wait,
            std::time::Duration::from_secs(10)
        );
        assert_eq!(cfg.route.matching(&y)[0].id, "0.2");
    }
}
