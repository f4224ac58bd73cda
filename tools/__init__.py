"""smartpark.tools"""
