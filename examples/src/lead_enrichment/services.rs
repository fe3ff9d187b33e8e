//! The `lookup_company` tool over a small offline firmographics table (a stand-in for a data
//! provider's API).

use flow_llm::{FnTool, LlmError, ToolError};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

/// The `lookup_company` tool over a small offline firmographics table (stand-in for a data
/// provider's API).
pub(super) fn company_lookup_tool() -> Result<FnTool, LlmError> {
    #[derive(Deserialize, JsonSchema)]
    struct Lookup {
        /// The company's web domain, e.g. `example.com`.
        domain: String,
    }
    FnTool::new(
        "lookup_company",
        "Looks up firmographics (industry, headcount, region) by web domain",
        |q: Lookup| async move {
            Ok::<_, ToolError>(
                firmographics(&q.domain)
                    .map_or_else(|| format!("no record for {}", q.domain), |record| record.to_string()),
            )
        },
    )
}

/// The offline firmographics table behind `lookup_company`.
pub fn firmographics(domain: &str) -> Option<serde_json::Value> {
    let record = |name: &str, industry: &str, employees: u32, region: &str| json!({ "name": name, "industry": industry, "employees": employees, "region": region });
    match domain.trim().to_lowercase().as_str() {
        "northwind-logistics.com" => Some(record("Northwind Logistics", "Freight and logistics", 1200, "Nordics")),
        "brightleaf.io" => Some(record("Brightleaf", "B2B software", 25, "United Kingdom")),
        "lindqvist-bakery.se" => Some(record("Lindqvist Bakery", "Food retail", 6, "Sweden")),
        _ => None,
    }
}
