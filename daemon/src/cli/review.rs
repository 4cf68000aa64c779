//! `fiona review PROJECT`: the project's review inventory, what left the box (issue 17):
//! every element of its de-identified outputs with keyword, VR, in how many instances, how
//! many distinct values and a few samples, then the private creators. This is where a
//! project spots a value that should not be there. With `--json`, the daemon's answer.

use clap::Args;

use super::output::iso_ms;
use super::table::{Align, Table};
use super::{show, Global};
use crate::control::api::ReviewInventory;
use crate::control::client::call;

#[derive(Args, Debug)]
pub struct ReviewArgs {
    /// The project (as in `fiona projects`).
    project: String,
}

pub fn review(g: &Global, a: ReviewArgs) -> Result<(), String> {
    show(g, call::review(&a.project), |v| print!("{}", render(&v)))
}

/// A value as one table cell: control characters (a report's line breaks) shown escaped.
fn cell(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

/// The inventory as the terminal shows it.
fn render(v: &ReviewInventory) -> String {
    let mut out = String::new();
    if v.transfers == 0 && v.tags.is_empty() {
        out.push_str(&format!(
            "project {}: nothing de-identified yet\n",
            v.project
        ));
        return out;
    }
    out.push_str(&format!(
        "project {}: {} transfers, {} instances de-identified, {} tags; updated {}\n",
        v.project,
        v.transfers,
        v.instances,
        v.tags.len(),
        iso_ms(v.updated_ms)
    ));
    if v.tags_capped {
        out.push_str(&format!(
            "(more tags than the {} kept: some are not listed)\n",
            crate::model::REVIEW_TAG_CAP
        ));
    }
    let mut t = Table::new(&[
        ("PATH", Align::Left),
        ("KEYWORD", Align::Left),
        ("VR", Align::Left),
        ("INSTANCES", Align::Right),
        ("DISTINCT", Align::Right),
        ("SAMPLES", Align::Left),
    ]);
    for tag in &v.tags {
        let distinct = if tag.distinct_capped {
            format!("{}+", tag.distinct)
        } else {
            tag.distinct.to_string()
        };
        let samples: Vec<String> = tag.samples.iter().map(|s| cell(s)).collect();
        t.row([
            tag.path.clone(),
            tag.keyword.clone(),
            tag.vr.clone(),
            tag.instances.to_string(),
            distinct,
            samples.join(" | "),
        ]);
    }
    out.push_str(&t.render());
    out.push('\n');
    if v.private_creators.is_empty() {
        out.push_str("private creators: none\n");
    } else {
        out.push_str("private creators:\n");
        let mut c = Table::new(&[
            ("GROUP", Align::Left),
            ("CREATOR", Align::Left),
            ("INSTANCES", Align::Right),
        ]);
        for p in &v.private_creators {
            c.row([p.group.clone(), cell(&p.creator), p.instances.to_string()]);
        }
        out.push_str(&c.render());
        if v.creators_capped {
            out.push_str(&format!(
                "(more private creators than the {} kept: some are not listed)\n",
                crate::model::REVIEW_CREATOR_CAP
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ReviewCreator, ReviewTag};

    #[test]
    fn a_table_of_tags_then_the_creators() {
        let mut v = ReviewInventory::empty("PROJ1");
        assert_eq!(render(&v), "project PROJ1: nothing de-identified yet\n");
        v.transfers = 1;
        v.instances = 3;
        v.tags.push(ReviewTag {
            path: "(0010,0010)".into(),
            keyword: "PatientName".into(),
            vr: "PN".into(),
            instances: 3,
            distinct: 1000,
            distinct_capped: true,
            samples: vec!["PROJ1-0042".into(), "line\nbreak".into()],
        });
        v.private_creators.push(ReviewCreator {
            creator: "ACME 1.0".into(),
            group: "0009".into(),
            instances: 2,
        });
        let text = render(&v);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("project PROJ1: 1 transfers, 3 instances"),
            "{text}"
        );
        assert!(lines[1].starts_with("PATH"), "{text}");
        assert!(
            lines[2].contains("PatientName")
                && lines[2].contains("1000+")
                && lines[2].contains("PROJ1-0042 | line\\nbreak"),
            "{text}"
        );
        assert!(text.contains("private creators:"), "{text}");
        assert!(text
            .lines()
            .any(|l| l.starts_with("0009") && l.contains("ACME 1.0")));
    }
}
