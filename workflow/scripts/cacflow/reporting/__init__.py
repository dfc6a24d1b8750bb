"""What the workflow reports: metrics, the paper's numbers, figures and the HTML report."""
