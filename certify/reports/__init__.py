"""Report rendering: heatmap figures (matplotlib) and Markdown/HTML/JSON documents."""
