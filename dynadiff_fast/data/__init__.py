"""dynadiff_fast.data"""
