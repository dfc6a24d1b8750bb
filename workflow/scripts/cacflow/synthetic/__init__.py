"""Making the synthetic CAC-CT cohort: anatomy and image formation, and the cohort writer."""
