"""smartpark.hub"""
