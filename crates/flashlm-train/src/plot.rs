//! Loss curves rendered to PNG with plotters.

use std::path::Path;

use plotters::prelude::*;

fn register_font() -> bool {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *DONE.get_or_init(|| {
        for p in [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ] {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Draw train loss (per logged step) and validation loss against steps into `path`.
/// Without a system font the curves are drawn without labels.
pub fn loss_png(path: &Path, train: &[(u64, f64)], val: &[(u64, f64)]) -> anyhow::Result<()> {
    let has_font = register_font();
    let all = train.iter().chain(val).filter(|(_, l)| l.is_finite());
    let (mut x_max, mut y_min, mut y_max) = (1u64, f64::INFINITY, f64::NEG_INFINITY);
    for &(s, l) in all {
        x_max = x_max.max(s);
        y_min = y_min.min(l);
        y_max = y_max.max(l);
    }
    if !y_min.is_finite() {
        return Ok(());
    }
    let pad = ((y_max - y_min) * 0.05).max(0.01);
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20).x_label_area_size(40).y_label_area_size(60);
    if has_font {
        builder.caption("FlashLM training loss", ("sans-serif", 22));
    }
    let mut chart = builder
        .build_cartesian_2d(0u64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss (nats/token)")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    } else {
        chart
            .configure_mesh()
            .disable_x_mesh()
            .disable_y_mesh()
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    let t = chart
        .draw_series(LineSeries::new(train.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        t.label("train").legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    }
    let v = chart
        .draw_series(LineSeries::new(val.iter().copied(), RED.stroke_width(3)).point_size(4))
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if has_font {
        v.label("validation")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED.stroke_width(3)));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(())
}
