from django import template

register = template.Library()


@register.filter(name="bytes")
def human_bytes(count) -> str:
    """1536 → "1.5 KiB"."""
    try:
        count = float(count)
    except (TypeError, ValueError):
        return ""
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    return ""
