//! The `search_web` tool the researcher calls, over a small offline corpus.

use flow_llm::{FnTool, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;

/// The `search_web` tool: a small offline corpus standing in for a search API (swap in yours).
pub(super) fn search_tool() -> Result<FnTool, flow_llm::LlmError> {
    #[derive(Deserialize, JsonSchema)]
    struct Query {
        /// What to search for.
        query: String,
    }
    FnTool::new("search_web", "Searches the web and returns result snippets with their URLs", |q: Query| async move {
        Ok::<_, ToolError>(search_corpus(&q.query))
    })
}

/// The offline corpus behind `search_web`. Figures are illustrative demo data.
pub fn search_corpus(query: &str) -> String {
    let q = query.to_lowercase();
    if q.contains("heat pump") {
        [
            "1. Field study, 2023 (https://example.org/cold-climate-field-study): cold-climate units kept a seasonal COP near 2.5 at sites averaging -10 °C.",
            "2. Installer survey (https://example.org/installer-survey): most retrofits in detached houses needed no new radiators.",
            "3. Grid operator note (https://example.org/grid-winter-peak): heat pumps add about 1.5 kW per home to the winter evening peak.",
            "4. Consumer agency guide (https://example.org/running-costs): running costs fall below gas boilers when electricity costs under 3x the gas price per kWh.",
        ]
        .join("\n")
    } else {
        format!("1. Forum thread (https://example.org/forum?q={}): opinions, no figures.", q.replace(' ', "+"))
    }
}
