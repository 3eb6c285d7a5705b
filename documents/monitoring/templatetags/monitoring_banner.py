from django import template

from documents.monitoring.report import system_report

register = template.Library()


@register.inclusion_tag("monitoring/degraded_banner.html")
def degraded_banner() -> dict:
    """While the platform is degraded, every admin page says why."""
    report = system_report()
    return {"reasons": report["reasons"]}
