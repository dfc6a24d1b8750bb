"""Calcium scores: the Agatston algorithm, the classical and hybrid patient scores,
agreement with a reference."""
