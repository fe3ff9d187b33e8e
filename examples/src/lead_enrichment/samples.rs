//! The leads the example enriches.

use super::LeadForm;

/// One lead of each kind: hot, warm, cold and invalid.
pub fn sample_leads() -> Vec<LeadForm> {
    let form = |name: &str, email: &str, company: &str, title: &str, message: &str| LeadForm {
        name: name.into(),
        email: email.into(),
        company: company.into(),
        title: title.into(),
        message: message.into(),
    };
    vec![
        form(
            "Dana Whitfield",
            "dana.whitfield@northwind-logistics.com",
            "Northwind Logistics",
            "VP Operations",
            "We are evaluating workflow automation for 40 dispatchers and want a demo this month.",
        ),
        form(
            "Sam Ortega",
            "sam@brightleaf.io",
            "Brightleaf",
            "Product Manager",
            "Curious what pricing looks like for a small team.",
        ),
        form(
            "Jonas Lindqvist",
            "jonas@lindqvist-bakery.se",
            "Lindqvist Bakery",
            "Owner",
            "Saw your talk, just browsing.",
        ),
        form("test", "not-an-email", "", "", "asdf"),
    ]
}
