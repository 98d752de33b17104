//! The planner's outputs: a table, JSON, and an SVG plot of images/s and scaling efficiency
//! against nodes (one line per strategy; the website shows the same file).

use super::Prediction;
use std::fmt::Write;

/// A fixed-width table, one row per (nodes, strategy), the recommended one marked.
pub fn table(rows: &[(usize, Vec<Prediction>)]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>6}  {:<22} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10} {:>12} {:>6} {:>10}",
        "nodes",
        "strategy",
        "step ms",
        "compute",
        "exp. comm",
        "bubble",
        "optimizer",
        "straggle",
        "images/s",
        "eff.",
        "mem MB"
    );
    for (n, preds) in rows {
        let best = preds.iter().map(|p| p.step_s).fold(f64::INFINITY, f64::min);
        for p in preds {
            let mark = if p.step_s == best { "*" } else { " " };
            let _ = writeln!(
                s,
                "{:>6} {mark}{:<22} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>12.0} {:>6.3} {:>10.1}",
                n,
                p.strategy,
                p.step_s * 1e3,
                p.compute_s * 1e3,
                p.exposed_comm_s * 1e3,
                p.bubble_s * 1e3,
                p.optimizer_s * 1e3,
                p.straggle_s * 1e3,
                p.images_per_s,
                p.efficiency,
                p.memory_bytes / 1e6
            );
        }
    }
    s.push_str("(* = recommended: the shortest step at that node count; times in ms per step)\n");
    s
}

/// The strategy family of a prediction ("dp", "ps", ...).
fn family(p: &Prediction) -> &str {
    p.strategy.split(' ').next().unwrap_or("")
}

/// An SVG with two panels: images/s (log-log) and efficiency against nodes.
// Long: one SVG document written top to bottom (axes, grid, one polyline per strategy, legend).
pub fn svg(title: &str, rows: &[(usize, Vec<Prediction>)]) -> String {
    let (w, h, pad) = (900.0, 380.0, 60.0);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut fams: Vec<String> = Vec::new();
    for (_, ps) in rows {
        for p in ps {
            if !fams.iter().any(|f| f == family(p)) {
                fams.push(family(p).to_string());
            }
        }
    }
    let nodes: Vec<f64> = rows.iter().map(|r| r.0 as f64).collect();
    let (nmin, nmax) =
        (nodes.iter().cloned().fold(f64::INFINITY, f64::min).max(1.0), nodes.iter().cloned().fold(1.0, f64::max));
    let ips: Vec<f64> = rows.iter().flat_map(|r| r.1.iter().map(|p| p.images_per_s)).filter(|v| *v > 0.0).collect();
    let (imin, imax) = (ips.iter().cloned().fold(f64::INFINITY, f64::min), ips.iter().cloned().fold(0.0, f64::max));
    let panel = (w - 3.0 * pad) / 2.0;
    let x = |n: f64, left: f64| {
        left + if nmax > nmin { (n.ln() - nmin.ln()) / (nmax.ln() - nmin.ln()) * panel } else { panel / 2.0 }
    };
    let y_ips = |v: f64| {
        h - pad - if imax > imin { (v.ln() - imin.ln()) / (imax.ln() - imin.ln()) * (h - 2.0 * pad) } else { 0.0 }
    };
    let y_eff = |v: f64| h - pad - v.clamp(0.0, 1.2) / 1.2 * (h - 2.0 * pad);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ =
        writeln!(s, "<text x=\"{}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\">{}</text>", w / 2.0, xml(title));
    for (k, (label, left)) in [("images/s (log)", pad), ("scaling efficiency", 2.0 * pad + panel)].iter().enumerate() {
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{pad}\" width=\"{panel}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>",
            h - 2.0 * pad
        );
        let _ =
            writeln!(s, "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{label}</text>", left + panel / 2.0, pad - 8.0);
        for n in &nodes {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"10\">{n}</text>",
                x(*n, *left),
                h - pad + 14.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nodes</text>",
            left + panel / 2.0,
            h - pad + 30.0
        );
        if k == 1 {
            for e in [0.0, 0.5, 1.0] {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">{e}</text>",
                    left - 4.0,
                    y_eff(e) + 4.0
                );
            }
        } else {
            for v in [imin, imax] {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" font-size=\"10\">{v:.0}</text>",
                    left - 4.0,
                    y_ips(v) + 4.0
                );
            }
        }
    }
    for (i, f) in fams.iter().enumerate() {
        let c = colors[i % colors.len()];
        for (k, left) in [pad, 2.0 * pad + panel].iter().enumerate() {
            let pts: Vec<String> = rows
                .iter()
                .filter_map(|(n, ps)| {
                    ps.iter()
                        .find(|p| family(p) == f)
                        .map(|p| (*n as f64, if k == 0 { y_ips(p.images_per_s) } else { y_eff(p.efficiency) }))
                })
                .map(|(n, y)| format!("{:.1},{:.1}", x(n, *left), y))
                .collect();
            let _ =
                writeln!(s, "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>", pts.join(" "));
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" fill=\"{c}\">{}</text>",
            pad + 10.0 + 90.0 * i as f64,
            h - 8.0,
            xml(f)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}
